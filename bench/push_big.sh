#!/usr/bin/env bash
# Push of a big app: 5,000 files of 10 KiB of random bytes (50 MB, incompressible) plus app.py.
# Measures, in one run against one server and agent:
#   - `paas push` first push (hash, match, zip, upload, checks, staging on the node, start, running)
#   - `paas push` again with nothing changed (incremental upload: only hashes and directories go)
#   - a plain `curl -F archive=@app.zip` of a zip (python's zipfile) of a folder of the same shape
#     to the same push endpoint, then polling until the instance runs, as `paas push` waits too.
#     Its files are fresh random bytes too, so neither the file cache nor the build cache helps it.
#   bench/push_big.sh [RUNS]   (default 3; uses target/release if built, else target/debug)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${1:-3}
BIN=$ROOT/target/release
[ -x "$BIN/paas-server" ] && [ -x "$BIN/paas-agent" ] && [ -x "$BIN/paas" ] || BIN=$ROOT/target/debug
WORK=$(mktemp -d /tmp/paas-bench-big.XXXX)
NODE=benchbig-$$
cleanup() {
  kill "${AGENT_PID:-}" "${SERVER_PID:-}" 2>/dev/null || true
  ids=$(docker ps -aq --filter "label=paas.node=$NODE")
  [ -n "$ids" ] && docker rm -f -v $ids >/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
now() { date +%s.%N; }

APP=$WORK/app
mkdir -p "$APP"
cp examples/python-app/app.py "$APP/"
python3 - "$APP" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(50):
    os.makedirs(f"{root}/data/d{d:02}", exist_ok=True)
    for f in range(100):
        with open(f"{root}/data/d{d:02}/f{f:03}.bin", "wb") as fh:
            fh.write(os.urandom(10 * 1024))
PY
python3 - "$APP" "$WORK/app.zip" <<'PY'
import os, sys, zipfile
root, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for d, _, files in os.walk(root):
        for f in sorted(files):
            p = os.path.join(d, f)
            z.write(p, os.path.relpath(p, root))
PY

PAAS_DATA_DIR=$WORK/server PAAS_LISTEN=127.0.0.1:0 PAAS_ADMIN_PASSWORD=bench "$BIN/paas-server" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 200); do [ -f "$WORK/server/listen-addr" ] && break; sleep 0.05; done
ADDR=$(cat "$WORK/server/listen-addr")
PAAS_CONTROLLER=http://$ADDR PAAS_JOIN_TOKEN_FILE=$WORK/server/join-token PAAS_NODE_NAME=$NODE \
  PAAS_DATA_DIR=$WORK/agent "$BIN/paas-agent" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
export PAAS_HOME=$WORK/cli
"$BIN/paas" login "http://$ADDR" -u admin -p bench >/dev/null
TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$PAAS_HOME/config.json")
for _ in $(seq 1 200); do "$BIN/paas" nodes 2>/dev/null | grep -q ' ready' && break; sleep 0.1; done
echo "app: $(find "$APP" -type f | wc -l) files, $(du -sm "$APP" | cut -f1) MB; zip $(du -m "$WORK/app.zip" | cut -f1) MB; binaries: $BIN"

first=(); again=(); curl_t=()
for i in $(seq 1 "$RUNS"); do
  # Every run after the first rewrites all files with new random bytes, so its first push finds
  # nothing in the file cache or the build cache, like a first push to a new server.
  if [ "$i" -gt 1 ]; then
    python3 - "$APP" <<'PY'
import os, sys
for d, _, files in os.walk(os.path.join(sys.argv[1], "data")):
    for f in files:
        with open(os.path.join(d, f), "wb") as fh:
            fh.write(os.urandom(10 * 1024))
PY
  fi
  t0=$(now); "$BIN/paas" push big$i -p "$APP" > "$WORK/first$i.out"; t1=$(now)
  first+=("$(echo "$t1 - $t0" | bc)")
  t0=$(now); "$BIN/paas" push big$i -p "$APP" > "$WORK/again$i.out"; t1=$(now)
  again+=("$(echo "$t1 - $t0" | bc)")
  head -1 "$WORK/again$i.out"
  t0=$(now)
  python3 - "$APP" <<'PY'
import os, sys
for d, _, files in os.walk(os.path.join(sys.argv[1], "data")):
    for f in files:
        with open(os.path.join(d, f), "wb") as fh:
            fh.write(os.urandom(10 * 1024))
PY
  python3 - "$APP" "$WORK/app.zip" <<'PY'
import os, sys, zipfile
root, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for d, _, files in os.walk(root):
        for f in sorted(files):
            p = os.path.join(d, f)
            z.write(p, os.path.relpath(p, root))
PY
  t0=$(now)
  code=$(curl -s -o "$WORK/curl$i.out" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -F "archive=@$WORK/app.zip;type=application/zip" "http://$ADDR/v1/apps/curl$i/push")
  t1=$(now)
  [ "$code" = 201 ] || { echo "curl push answered $code: $(cat "$WORK/curl$i.out")" >&2; exit 1; }
  until "$BIN/paas" app curl$i --json | grep -q '"state":"running"'; do sleep 0.1; done
  t1=$(now)
  curl_t+=("$(echo "$t1 - $t0" | bc)")
  "$BIN/paas" delete big$i -f >/dev/null; "$BIN/paas" delete curl$i -f >/dev/null
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mf=$(median "${first[@]}"); ma=$(median "${again[@]}"); mc=$(median "${curl_t[@]}")
echo "paas push, first (s):      ${first[*]}"
echo "paas push, unchanged (s):  ${again[*]}"
echo "curl upload to push (s):   ${curl_t[*]}"
printf 'median: first %.2f s, unchanged re-push %.2f s, curl %.2f s; first/curl %.2f, re-push/curl %.2f\n' \
  "$mf" "$ma" "$mc" "$(echo "$mf / $mc" | bc -l)" "$(echo "$ma / $mc" | bc -l)"
