#!/usr/bin/env bash
# App-to-app latency and throughput (issue 25): through the platform's internal path against the
# same two programs in two containers on a plain Docker bridge, in one run, alternating.
#   (a) bridge - two containers of the stack image on a plain `docker network create` bridge
#                (inter-container traffic on, no policy chain), the caller reaching the callee
#                by its container name through Docker's resolver
#   (b) near   - a pushed caller reaching a pushed callee on the SAME node as NAME.apps.internal
#                (the node's resolver, the agent's policy chain, one bridge)
#   (c) far    - the same caller reaching a callee on the OTHER node (its own bridge and subnet:
#                routed between bridges, source kept by the nat RETURN rule)
# Each measurement runs bench/app_to_app/client.py inside the caller's container (docker exec)
# against bench/app_to_app/app.py: keep-alive request p50/p99, new connection (resolve +
# connect + request) p50/p99, and MiB/s of 3 x 64 MiB bodies.
#
#   bench/app_to_app.sh [ROUNDS] [REQUESTS]      (defaults: 5 rounds, 2000 requests; run as root:
#                                                 the agents keep iptables rules and bind DNS)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${1:-5}
N=${2:-2000}
BIN=$ROOT/target/release
[ -x "$BIN/paas-server" ] && [ -x "$BIN/paas-agent" ] && [ -x "$BIN/paas" ] || BIN=$ROOT/target/debug
STACK=${PAAS_STACK_IMAGE:-paas-stack:trixie}
[ "$(id -u)" = 0 ] || { echo "run as root (iptables rules, DNS on the bridge gateway)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/paas-a2a.XXXX)
TAG=a2a$$
NODE_A=$TAG-a
NODE_B=$TAG-b
PIDS=()
cleanup() {
  # SIGTERM: each agent removes its policy chain, nat rules and routes on a clean stop.
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ids=$(docker ps -aq --filter "label=paas.node=$NODE_A"; docker ps -aq --filter "label=paas.node=$NODE_B"; docker ps -aq --filter "label=paas-bench=$TAG")
  [ -z "$ids" ] || docker rm -f -v $ids >/dev/null
  for n in "paas-net-$NODE_A" "paas-net-$NODE_B" "$TAG-bridge"; do docker network rm "$n" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

PAAS_DATA_DIR=$WORK/server PAAS_LISTEN=127.0.0.1:0 PAAS_ADMIN_PASSWORD=bench "$BIN/paas-server" >"$WORK/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 200); do [ -f "$WORK/server/listen-addr" ] && break; sleep 0.05; done
ADDR=$(cat "$WORK/server/listen-addr")
for side in a b; do
  node=$TAG-$side
  PAAS_CONTROLLER=http://$ADDR PAAS_JOIN_TOKEN_FILE=$WORK/server/join-token PAAS_NODE_NAME=$node \
    PAAS_DATA_DIR=$WORK/agent-$side PAAS_DOCKER_NETWORK=paas-net-$node PAAS_NODE_LABELS=side=$side \
    "$BIN/paas-agent" >"$WORK/agent-$side.log" 2>&1 &
  PIDS+=($!)
done
export PAAS_HOME=$WORK/cli
"$BIN/paas" login "http://$ADDR" -u admin -p bench >/dev/null
for _ in $(seq 1 300); do [ "$("$BIN/paas" nodes 2>/dev/null | grep -c ' ready')" = 2 ] && break; sleep 0.1; done

push() { # APP SIDE
  "$BIN/paas" push "$1" -p bench/app_to_app -m 256M --placement "side=$2" >/dev/null
}
push caller a
push near a
push far b
"$BIN/paas" map-route near apps.internal --hostname near-$TAG >/dev/null
"$BIN/paas" map-route far apps.internal --hostname far-$TAG >/dev/null
"$BIN/paas" add-network-policy caller near --port 8080 >/dev/null
"$BIN/paas" add-network-policy caller far --port 8080 >/dev/null
CALLER=$(docker ps -q --filter "label=paas.node=$NODE_A" --filter "label=paas.app=caller" | head -1)
[ -n "$CALLER" ] || { echo "no caller container" >&2; exit 1; }

# The peer: the same programs, same image, on a plain bridge.
docker network create "$TAG-bridge" >/dev/null
docker run -d --name "$TAG-srv" --label "paas-bench=$TAG" --network "$TAG-bridge" -e PORT=8080 \
  -v "$ROOT/bench/app_to_app:/app:ro" -w /app "$STACK" python3 app.py >/dev/null
docker run -d --name "$TAG-cli" --label "paas-bench=$TAG" --network "$TAG-bridge" "$STACK" sleep infinity >/dev/null

measure() { # NAME CONTAINER HOST
  local line
  for _ in $(seq 1 300); do
    line=$(docker exec -i "$2" python3 - "$3" 8080 "$N" <bench/app_to_app/client.py 2>/dev/null) && break
    sleep 0.2 # the policy or the name reaching the node, once, before the first round
  done
  [ -n "$line" ] || { echo "$1: $3 never answered" >&2; exit 1; }
  printf '%s\t%s\n' "$1" "$line" | tee -a "$WORK/results.tsv"
}

echo "# $ROUNDS rounds, $N requests each, binaries $BIN, stack $STACK, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf 'target\tkeepalive_p50_ms\tkeepalive_p99_ms\tnewconn_p50_ms\tnewconn_p99_ms\tMiB_per_s\n'
for _ in $(seq 1 "$ROUNDS"); do
  measure bridge "$TAG-cli" "$TAG-srv"
  measure near "$CALLER" "near-$TAG.apps.internal"
  measure far "$CALLER" "far-$TAG.apps.internal"
done

python3 - "$WORK/results.tsv" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
cols = ["keep-alive p50 ms", "keep-alive p99 ms", "new conn p50 ms", "new conn p99 ms", "MiB/s"]
med = {}
print("\n| path | " + " | ".join(cols) + " |")
print("|" + " --- |" * (len(cols) + 1))
for name in ("bridge", "near", "far"):
    rs = [[float(x) for x in r[1:]] for r in rows if r[0] == name]
    med[name] = [statistics.median(c) for c in zip(*rs)]
    cells = [f"{m:.3f} ({min(c):.3f}-{max(c):.3f})" if i < 4 else f"{m:.0f} ({min(c):.0f}-{max(c):.0f})"
             for i, (m, c) in enumerate(zip(med[name], zip(*rs)))]
    print(f"| {name} | " + " | ".join(cells) + " |")
for name in ("near", "far"):
    r = [a / b for a, b in zip(med[name], med["bridge"])]
    print(f"\n{name}/bridge: keep-alive p50 {r[0]:.2f}x, p99 {r[1]:.2f}x, new conn p50 {r[2]:.2f}x, "
          f"p99 {r[3]:.2f}x, throughput {r[4]:.2f}x")
PY
