#!/usr/bin/env bash
# Push-to-first-200: how long from `paas push` of examples/python-app until the router answers 200,
# beside a bare `docker run` of the same command on the same stack image (the floor: no upload,
# staging, scheduling, sandboxing or routing), measured alternately in the same run.
#   bench/push_to_200.sh [RUNS]      (default 5; uses target/release if built, else target/debug)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${1:-5}
BIN=$ROOT/target/release
[ -x "$BIN/paas-server" ] && [ -x "$BIN/paas-agent" ] && [ -x "$BIN/paas" ] || BIN=$ROOT/target/debug
STACK=${PAAS_STACK_IMAGE:-paas-stack:bookworm}
WORK=$(mktemp -d /tmp/paas-bench.XXXX)
NODE=bench-$$
cleanup() {
  kill "${AGENT_PID:-}" "${SERVER_PID:-}" 2>/dev/null || true
  ids=$(docker ps -aq --filter "label=paas.node=$NODE"; docker ps -aq --filter "label=paas-bench=$NODE")
  [ -n "$ids" ] && docker rm -f -v $ids >/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
wait_200() { # URL [Host header]
  for _ in $(seq 1 3000); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 ${2:+-H "Host: $2"} "$1" || true)
    [ "$code" = 200 ] && return 0
    sleep 0.01
  done
  echo "no 200 from $1" >&2; return 1
}

PAAS_DATA_DIR=$WORK/server PAAS_LISTEN=127.0.0.1:0 PAAS_ADMIN_PASSWORD=bench "$BIN/paas-server" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 200); do [ -f "$WORK/server/listen-addr" ] && break; sleep 0.05; done
ADDR=$(cat "$WORK/server/listen-addr")
PAAS_CONTROLLER=http://$ADDR PAAS_JOIN_TOKEN_FILE=$WORK/server/join-token PAAS_NODE_NAME=$NODE \
  PAAS_DATA_DIR=$WORK/agent "$BIN/paas-agent" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
export PAAS_HOME=$WORK/cli
"$BIN/paas" login "http://$ADDR" -u admin -p bench >/dev/null
for _ in $(seq 1 200); do "$BIN/paas" nodes 2>/dev/null | grep -q ' ready' && break; sleep 0.1; done
# Warm-up push: builds the droplet image once, as any second push of the same code would find it.
"$BIN/paas" push warmup -p examples/python-app >/dev/null

push_times=(); docker_times=()
for i in $(seq 1 "$RUNS"); do
  app=bench$i
  t0=$(now)
  "$BIN/paas" push "$app" -p examples/python-app >/dev/null
  wait_200 "http://$ADDR/" "$app.localhost"
  t1=$(now)
  push_times+=("$(echo "$t1 - $t0" | bc)")
  "$BIN/paas" delete "$app" -f >/dev/null

  t0=$(now)
  cid=$(docker run -d --label "paas-bench=$NODE" -e PORT=8080 -p 127.0.0.1::8080 -v "$ROOT/examples/python-app:/app:ro" -w /app "$STACK" python3 app.py)
  port=$(docker port "$cid" 8080/tcp | head -1 | sed 's/.*://')
  wait_200 "http://127.0.0.1:$port/"
  t1=$(now)
  docker_times+=("$(echo "$t1 - $t0" | bc)")
  docker rm -f "$cid" >/dev/null
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mp=$(median "${push_times[@]}"); md=$(median "${docker_times[@]}")
echo "binaries: $BIN; runs: $RUNS"
echo "paas push -> first 200 (s): ${push_times[*]}"
echo "docker run -> first 200 (s): ${docker_times[*]}"
printf 'median: paas push %.2f s, docker run %.2f s, ratio %.2f\n' "$mp" "$md" "$(echo "$mp / $md" | bc -l)"
