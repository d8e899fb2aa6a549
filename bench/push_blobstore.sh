#!/usr/bin/env bash
# Push time on the local blobstore against an S3 one (moto on loopback), issue 20.
# usage: bench/push_blobstore.sh s3|local   (APPDIR=folder to push another app; binaries built)
# Three pushes of new apps, then a re-push of the first (its files come from the upload cache).
set -euo pipefail
mode=$1
T=$(cd "$(dirname "$0")/.." && pwd)/target/debug
D=$(mktemp -d /tmp/paas-bench-XXXX)
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
pids=()
cleanup() { for p in "${pids[@]}"; do kill $p 2>/dev/null || true; done; sleep 1; docker ps -aq --filter label=paas.node=bench-blobs-$mode | xargs -r docker rm -f >/dev/null 2>&1 || true; rm -rf "$D"; }
trap cleanup EXIT
if [ $mode = s3 ]; then
  python3 -m moto.server -H 127.0.0.1 -p $PORT >/dev/null 2>&1 & pids+=($!)
  for i in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:$PORT/ && break; sleep 0.1; done
  curl -s -X PUT -H 'Content-Length: 0' http://127.0.0.1:$PORT/bench >/dev/null
  export PAAS_BLOBSTORE_URL="s3://bench/p?endpoint=http://127.0.0.1:$PORT&region=us-east-1" AWS_ACCESS_KEY_ID=t AWS_SECRET_ACCESS_KEY=t
fi
PAAS_DATA_DIR=$D/server PAAS_LISTEN=127.0.0.1:0 PAAS_ADMIN_PASSWORD=pw123456 $T/paas-server >$D/server.log 2>&1 & pids+=($!)
for i in $(seq 100); do [ -s $D/server/listen-addr ] && break; sleep 0.2; done
ADDR=$(cat $D/server/listen-addr)
PAAS_CONTROLLER=http://$ADDR PAAS_JOIN_TOKEN_FILE=$D/server/join-token PAAS_NODE_NAME=bench-blobs-$mode PAAS_DATA_DIR=$D/agent $T/paas-agent >$D/agent.log 2>&1 & pids+=($!)
export PAAS_HOME=$D/cli
sleep 6
$T/paas login http://$ADDR -u admin -p pw123456 >/dev/null 2>&1 || $T/paas login --api http://$ADDR --username admin --password pw123456
for n in 1 2 3; do
  s=$(date +%s.%N)
  $T/paas push bench$n -p ${APPDIR:-$T/../../examples/python-app} -m 64M >/dev/null
  e=$(date +%s.%N)
  echo "$mode push $n: $(python3 -c "print(round($e-$s,2))") s"
done
s=$(date +%s.%N); $T/paas push bench1 -p ${APPDIR:-$T/../../examples/python-app} -m 64M >/dev/null; e=$(date +%s.%N)
echo "$mode re-push (cached files): $(python3 -c "print(round($e-$s,2))") s"
