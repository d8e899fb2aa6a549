#!/usr/bin/env bash
# Push-to-first-200 (issues 2 and 24): how long from `paas push` until the router answers 200,
# beside a bare `docker run` of the same command on the same (default, trixie) stack image (the floor: no upload,
# staging, scheduling, sandboxing or routing), all four alternating in each round of one run:
#   A  docker run of examples/python-app (stdlib only), folder bind-mounted
#   B  paas push of that unchanged app under a new name (the build cache reuses its droplet)
#   A2 docker run of examples/python-wheels, its one dependency unpacked beside it (PYTHONPATH)
#   C  paas re-push of examples/python-wheels with app.py changed (its greeting), same
#      requirements.txt: only app code changed, so the node puts it on the layers staged
#      before, no staging container ("staged layers reused"); timed until the router answers
#      with the new text
# Prints each series' median and min-max, the ratios B/A and C/A2, and the phases the controller
# measured for B and C (`Phases:` line of `paas push`: upload, stage, start, health, route).
#   bench/push_to_200.sh [RUNS]      (default 5; uses target/release if built, else target/debug)
#   PAAS_BENCH_BIN=DIR picks the binaries (to compare two builds).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${1:-5}
BIN=${PAAS_BENCH_BIN:-$ROOT/target/release}
[ -x "$BIN/paas-server" ] && [ -x "$BIN/paas-agent" ] && [ -x "$BIN/paas" ] || BIN=$ROOT/target/debug
STACK=${PAAS_STACK_IMAGE:-paas-stack:trixie}
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
wait_200() { # URL [Host header] [text the body must hold]
  for _ in $(seq 1 6000); do
    body=$(curl -s --fail --max-time 1 ${2:+-H "Host: $2"} "$1" || true)
    if [ -n "$body" ] && { [ -z "${3:-}" ] || [[ $body == *"$3"* ]]; }; then return 0; fi
    sleep 0.01
  done
  echo "no 200 ${3:+with '$3' }from $1" >&2; return 1
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

# The app with a dependency, in a folder of its own (C edits it), and that dependency unpacked
# for the bare run (what staging installs, without staging).
cp -r examples/python-wheels "$WORK/wheels"
python3 -c 'import sys, zipfile, glob; zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0]).extractall(sys.argv[2])' \
  "$WORK/wheels/vendor" "$WORK/deps"
greet() { sed -i "s/greetlib.greet(\"[^\"]*\")/greetlib.greet(\"$1\")/" "$WORK/wheels/app.py"; }

# Warm-up: the droplet of examples/python-app once (B's build cache), and the wheels app once
# (its dependency cache entry, and the running app C re-pushes).
"$BIN/paas" push warmup -p examples/python-app >/dev/null
greet warm
"$BIN/paas" push wheels -p "$WORK/wheels" >/dev/null

# `Phases: upload 0.04 s, stage 0.21 s (droplet reused), start ...` -> "0.04 0.21 ..."
phases_of() { { grep '^Phases:' "$1" || true; } | sed -E 's/ \([a-z ]+\)//; s/[^0-9. ]//g; s/  +/ /g; s/^ //'; }
reused_of() { grep '^Phases:' "$1" | grep -oE '\((droplet|staged layers|dependencies) reused\)' || { grep -q '^Phases:' "$1" && echo '(nothing reused)' || echo '(no Phases line)'; }; }

a=(); b=(); a2=(); c=(); b_phases=(); c_phases=()
for i in $(seq 1 "$RUNS"); do
  t0=$(now)
  cid=$(docker run -d --label "paas-bench=$NODE" -e PORT=8080 -p 127.0.0.1::8080 -v "$ROOT/examples/python-app:/app:ro" -w /app "$STACK" python3 app.py)
  port=$(docker port "$cid" 8080/tcp | head -1 | sed 's/.*://')
  wait_200 "http://127.0.0.1:$port/"
  a+=("$(echo "$(now) - $t0" | bc)")
  docker rm -f "$cid" >/dev/null

  app=bench$i
  t0=$(now)
  "$BIN/paas" push "$app" -p examples/python-app >"$WORK/b.out"
  wait_200 "http://$ADDR/" "$app.localhost"
  b+=("$(echo "$(now) - $t0" | bc)")
  b_phases+=("$(phases_of "$WORK/b.out")"); b_reused=$(reused_of "$WORK/b.out")
  "$BIN/paas" delete "$app" -f >/dev/null

  greet "round $i"
  t0=$(now)
  cid=$(docker run -d --label "paas-bench=$NODE" -e PORT=8080 -e PYTHONPATH=/deps -p 127.0.0.1::8080 \
    -v "$WORK/wheels:/app:ro" -v "$WORK/deps:/deps:ro" -w /app "$STACK" python3 app.py)
  port=$(docker port "$cid" 8080/tcp | head -1 | sed 's/.*://')
  wait_200 "http://127.0.0.1:$port/" "" "round $i"
  a2+=("$(echo "$(now) - $t0" | bc)")
  docker rm -f "$cid" >/dev/null

  t0=$(now)
  "$BIN/paas" push wheels -p "$WORK/wheels" >"$WORK/c.out"
  wait_200 "http://$ADDR/" "wheels.localhost" "round $i"
  c+=("$(echo "$(now) - $t0" | bc)")
  c_phases+=("$(phases_of "$WORK/c.out")"); c_reused=$(reused_of "$WORK/c.out")
done

stats() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {m=(NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2); printf "%.3f (%.3f-%.3f)", m, v[1], v[NR]}'; }
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
phase_table() { # label, rows of "upload stage start health route"
  local label=$1; shift
  [ -n "${1:-}" ] || { echo "  $label: no phases (binaries from before issue 24's push phases)"; return; }
  for k in 1 2 3 4 5; do
    name=$(echo "upload stage start health route" | cut -d' ' -f$k)
    vals=(); for row in "$@"; do vals+=("$(echo "$row" | cut -d' ' -f$k)"); done
    printf '  %s %-7s %s s\n' "$label" "$name" "$(stats "${vals[@]}")"
  done
}
echo "binaries: $BIN; runs: $RUNS; stack: $STACK"
echo "A  docker run python-app -> 200 (s):      ${a[*]}"
echo "B  paas push python-app -> 200 (s):       ${b[*]}"
echo "A2 docker run python-wheels -> 200 (s):   ${a2[*]}"
echo "C  paas re-push python-wheels -> 200 (s): ${c[*]}"
echo "median (min-max), seconds:"
echo "  A  $(stats "${a[@]}")"
echo "  B  $(stats "${b[@]}")   $b_reused"
echo "  A2 $(stats "${a2[@]}")"
echo "  C  $(stats "${c[@]}")   $c_reused"
printf 'ratio of medians: B/A %.2f, C/A2 %.2f\n' \
  "$(echo "$(median "${b[@]}") / $(median "${a[@]}")" | bc -l)" \
  "$(echo "$(median "${c[@]}") / $(median "${a2[@]}")" | bc -l)"
echo "phases as the controller measured them, median (min-max):"
phase_table B "${b_phases[@]}"
phase_table C "${c_phases[@]}"
