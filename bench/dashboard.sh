#!/usr/bin/env bash
# Dashboard apps page with N apps (default 500): time to answer GET / for a logged-in operator,
# measured with curl on loopback (so it is the server's render time plus well under 1 ms).
#   bench/dashboard.sh [APPS] [RUNS]   (uses target/release if built, else target/debug)
# The page lists 100 apps (its default page, since issue 24); LIMIT=1000 renders up to 1,000 on one.
set -euo pipefail
cd "$(dirname "$0")/.."
APPS=${1:-500}; RUNS=${2:-30}
BIN=$PWD/target/release; [ -x "$BIN/paas-server" ] || BIN=$PWD/target/debug
WORK=$(mktemp -d /tmp/paas-bench-dash.XXXX)
trap 'kill $SERVER_PID 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
PAAS_DATA_DIR=$WORK/server PAAS_LISTEN=127.0.0.1:0 PAAS_ADMIN_PASSWORD=bench-password "$BIN/paas-server" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 200); do [ -f "$WORK/server/listen-addr" ] && break; sleep 0.05; done
API=http://$(cat "$WORK/server/listen-addr")
TOKEN=$(curl -fsS -H 'Content-Type: application/json' -d '{"username":"admin","password":"bench-password"}' "$API/v1/auth/login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
python3 - "$WORK/app.zip" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("app.py", "print('hi')\n")
PY
for i in $(seq 1 "$APPS"); do
  curl -fsS -o /dev/null -H "Authorization: Bearer $TOKEN" -F archive=@"$WORK/app.zip" "$API/v1/apps/app$i/push"
done
times=()
for _ in $(seq 1 "$RUNS"); do
  times+=("$(curl -fsS -o /dev/null -w '%{time_total}' --cookie "paas_session=$TOKEN" "$API/${LIMIT:+?limit=$LIMIT}")")
done
printf '%s\n' "${times[@]}" | sort -n | awk -v n="$APPS" -v bin="$BIN" '{a[NR]=$1} END {printf "binaries: %s\napps page with %d apps: median %.1f ms, p90 %.1f ms, max %.1f ms (%d runs)\n", bin, n, a[int((NR+1)/2)]*1000, a[int(NR*0.9)]*1000, a[NR]*1000, NR}'
