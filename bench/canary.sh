#!/usr/bin/env bash
# Time to detect and roll back a bad canary (issue 23), at a steady request rate.
#
# A real controller and a stand-in node (bench/fake_node.py, the real agent protocol) that
# reports the app's instances on a healthy upstream, and those of a revision pushed with
# BENCH_BAD=1 on an upstream answering 500 on half its requests (bench/canary_upstream.py).
# A paced client (bench/canary_load.py) sends RATE requests/s through the router; each round
# pushes the bad revision as a canary (steps 10,100, step wait 10 min, min requests 20,
# max-error-rate 5%) and measures, from the deployment's own times, how long from the start of
# its first step (every new instance routed, 10% of requests sent to it) until it was rolled
# back (weights to 0, current revision back to the old one). The median of ROUNDS rounds and
# the spread (min-max) are printed per rate.
#
#   cargo build -p paas-server -p paas && bench/canary.sh [ROUNDS] [RATES]
#   (defaults: 5 rounds, rates "100 1000"); PAAS_SERVER=/path/to/paas-server to use another build
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${1:-5}
RATES=${2:-"100 1000"}
SERVER=${PAAS_SERVER:-$ROOT/target/release/paas-server}
[ -x "$SERVER" ] || SERVER=$ROOT/target/debug/paas-server
CLI=$ROOT/target/release/paas
[ -x "$CLI" ] || CLI=$ROOT/target/debug/paas
[ -x "$SERVER" ] && [ -x "$CLI" ] || { echo "build first: cargo build -p paas-server -p paas" >&2; exit 1; }

WORK=$(mktemp -d /tmp/paas-canary-bench.XXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
GOOD=$(free_port)
BAD=$(free_port)
python3 bench/canary_upstream.py "$GOOD" 0 & PIDS+=($!)
python3 bench/canary_upstream.py "$BAD" 50 & PIDS+=($!)

PAAS_DATA_DIR=$WORK/server PAAS_LISTEN=127.0.0.1:0 PAAS_ADMIN_PASSWORD=bench RUST_LOG="info,paas::http=warn" \
  "$SERVER" >"$WORK/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 200); do [ -f "$WORK/server/listen-addr" ] && break; sleep 0.05; done
ADDR=$(cat "$WORK/server/listen-addr")
python3 bench/fake_node.py "http://$ADDR" "$(cat "$WORK/server/join-token")" "bench-$$" "$GOOD" "$BAD" >"$WORK/node.log" 2>&1 &
PIDS+=($!)
export PAAS_HOME=$WORK/cli
"$CLI" login "http://$ADDR" -u admin -p bench >/dev/null
for _ in $(seq 1 100); do "$CLI" nodes 2>/dev/null | grep -q ' ready' && break; sleep 0.1; done

APP=$WORK/app
mkdir -p "$APP"
cp examples/python-app/app.py "$APP/"
manifest() { printf 'applications:\n- name: bench\n  memory: 64M\n  env:\n    BENCH_BAD: "%s"\n' "$1" >"$APP/manifest.yml"; }
manifest 0
(cd "$APP" && "$CLI" push >/dev/null)

echo -e "rate\tround\tdetect_and_rollback_s\tnew_requests\tnew_errors\tachieved"
for RATE in $RATES; do
  TIMES=()
  for R in $(seq 1 "$ROUNDS"); do
    python3 bench/canary_load.py "$ADDR" bench.localhost "$RATE" >"$WORK/load.out" 2>&1 &
    LOAD=$!
    sleep 3
    manifest 1
    (cd "$APP" && "$CLI" push --strategy canary --steps 10,100 --step-wait 10m --min-requests 20 --max-error-rate 5% >/dev/null)
    RES=""
    for _ in $(seq 1 600); do
      J=$("$CLI" deployment bench --json)
      RES=$(python3 - "$J" <<'PY'
import json, sys, datetime
d = json.loads(sys.argv[1])
if d["state"] != "rolled_back":
    sys.exit(0)
p = lambda t: datetime.datetime.fromisoformat(t.replace("Z", "+00:00"))
print(f'{(p(d["updated_at"]) - p(d["step_started_at"])).total_seconds():.2f}')
PY
)
      [ -n "$RES" ] && break
      sleep 0.1
    done
    [ -n "$RES" ] || { echo "no rollback within 60 s" >&2; tail -20 "$WORK/server.log" >&2; exit 1; }
    # The comparison at the decision is in the rollback's reason: "(N of M requests)".
    REASON=$("$CLI" deployment bench --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["reason"])')
    NEW=$(echo "$REASON" | sed -n 's/.*(\([0-9]*\) of \([0-9]*\) requests).*/\2\t\1/p')
    kill "$LOAD"; wait "$LOAD" 2>/dev/null || true
    echo -e "$RATE\t$R\t$RES\t${NEW:-?\t?}\t$(cut -d' ' -f1 "$WORK/load.out")"
    TIMES+=("$RES")
    manifest 0
  done
  printf '%s\n' "${TIMES[@]}" | sort -n | python3 -c '
import sys
v = [float(x) for x in sys.stdin]
print(f"# rate '"$RATE"' req/s: median {v[len(v)//2]:.2f} s (min {v[0]:.2f}, max {v[-1]:.2f}) over {len(v)} rounds")'
done
