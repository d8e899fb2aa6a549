#!/usr/bin/env bash
# Log throughput: an app prints LINES numbered lines as fast as it can (on a trigger, so every
# consumer is attached first); two consumers of the same output in the same run:
#   - paas: the SSE stream GET /v1/apps/NAME/logs/stream (engine -> agent -> controller hub -> client)
#   - docker: `docker logs -f` on the same container (engine -> client: the floor)
# Reports for each: lines/s and MiB/s from the trigger to the last line, lines lost (must be 0: the
# agent runs without a rate limit here, so every line is below it), and the CPU seconds the
# paas-server and paas-agent processes spent per million lines (from /proc/PID/stat).
#   bench/logs.sh [LINES] [RUNS]     (default 200000 lines, 3 runs; target/release if built)
#   PAAS_BIN_DIR=DIR bench/logs.sh   the binaries in DIR instead (e.g. a baseline build, to compare)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LINES=${1:-200000}
RUNS=${2:-3}
BIN=${PAAS_BIN_DIR:-$ROOT/target/release}
[ -n "${PAAS_BIN_DIR:-}" ] || { [ -x "$BIN/paas-server" ] && [ -x "$BIN/paas-agent" ] && [ -x "$BIN/paas" ]; } || BIN=$ROOT/target/debug
WORK=$(mktemp -d /tmp/paas-bench-logs.XXXX)
NODE=bench-logs-$$
APP=logbench$$
cleanup() {
  rc=$?
  # Background pipelines are subshells that run this trap too; only the script itself cleans up.
  [ "$BASHPID" = "$$" ] || return 0
  [ $rc -ne 0 ] && tail -n 20 "$WORK/server.log" "$WORK/agent.log" >&2
  kill "${AGENT_PID:-}" "${SERVER_PID:-}" 2>/dev/null || true
  ids=$(docker ps -aq --filter "label=paas.node=$NODE")
  [ -n "$ids" ] && docker rm -f -v $ids >/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/app"
cat >"$WORK/app/app.py" <<'PY'
import os, socket, sys
# Prints LINES numbered lines as fast as it can each time GET /go arrives.
n_lines = int(os.environ.get("LINES", "200000"))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(os.environ["PORT"])))
s.listen(16)
run = 0
while True:
    c, _ = s.accept()
    req = c.recv(4096)
    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
    c.close()
    if b"GET /go" not in req:
        continue
    run += 1
    w = sys.stdout.write
    for i in range(1, n_lines + 1):
        w("bench %d %d the quick brown fox jumps over the lazy dog\n" % (run, i))
    sys.stdout.flush()
PY
echo "web: python3 -u app.py" >"$WORK/app/Procfile"

# One run: attaches both readers, triggers the flood, and reads until each has every line (or 20 s
# of silence). Prints one row per reader and the server + agent CPU for the run.
cat >"$WORK/run.py" <<'PY'
import re, subprocess, sys, threading, time, urllib.request
run, lines, addr, app, token, cid, spid, apid = sys.argv[1:9]
run, lines = int(run), int(lines)
tick = 100.0
def cpu(pid):
    f = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick
pat = re.compile(rb"bench %d (\d+) " % run)
res = {}
def read(name, cmd):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = bytearray(lines + 1); got = 0; nbytes = 0; last = None; other = []
    out = p.stdout
    ready.release()
    while got < lines:
        l = out.readline()
        if not l:
            break
        m = pat.search(l)
        if not m and len(other) < 3 and not l.startswith((b"id:", b"\n", b":")):
            other.append(l[:200])
        if m:
            i = int(m.group(1))
            if 0 < i <= lines and not seen[i]:
                seen[i] = 1; got += 1; last = time.time()
                nbytes += len(m.group(0)) + len(b"the quick brown fox jumps over the lazy dog\n")
                # A reader still waiting at the deadline reports what it got so far.
                res[name] = (got, last, nbytes)
    p.kill(); p.wait()
    if got < lines and other:
        # What else the reader printed helps to tell a slow reader from a broken one.
        sys.stderr.write("%s reader, other output: %r\n" % (name, other))
    res[name] = (got, last, nbytes)
ready = threading.Semaphore(0)
readers = [
    ("paas", ["curl", "-sN", "-H", "Authorization: Bearer " + token,
              "http://%s/v1/apps/%s/logs/stream?source=APP&limit=0" % (addr, app)]),
    ("docker", ["docker", "logs", "-f", "--since", "0s", cid]),
]
threads = [threading.Thread(target=read, args=r, daemon=True) for r in readers]
for t in threads: t.start()
for _ in threads: ready.acquire()
time.sleep(1)  # both connections established (setup, not measured)
c0 = cpu(spid) + cpu(apid)
t0 = time.time()
req = urllib.request.Request("http://%s/go" % addr, headers={"Host": app + ".localhost"})
urllib.request.urlopen(req).read()
# A reader that misses lines would wait forever: give up after 60 s and report what arrived.
deadline = t0 + 60
for t in threads:
    t.join(max(1, deadline - time.time()))
c1 = cpu(spid) + cpu(apid)
for name, _ in readers:
    got, last, nbytes = res.get(name, (0, None, 0))
    secs = (last or time.time()) - t0
    print("%-4d %-7s %10.2f %10.0f %8.2f %6d" % (run, name, secs, got / secs, nbytes / secs / 1048576, lines - got))
print("run %d: paas-server + paas-agent CPU %.2f s = %.2f s per million lines" % (run, c1 - c0, (c1 - c0) * 1e6 / lines))
PY

PAAS_DATA_DIR=$WORK/server PAAS_LISTEN=127.0.0.1:0 PAAS_ADMIN_PASSWORD=bench \
  RUST_LOG=warn "$BIN/paas-server" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 200); do [ -f "$WORK/server/listen-addr" ] && break; sleep 0.05; done
ADDR=$(cat "$WORK/server/listen-addr")
PAAS_CONTROLLER=http://$ADDR PAAS_JOIN_TOKEN_FILE=$WORK/server/join-token PAAS_NODE_NAME=$NODE \
  PAAS_DATA_DIR=$WORK/agent PAAS_LOG_RATE_LIMIT_LINES=0 PAAS_LOG_RATE_LIMIT_BYTES=0 \
  RUST_LOG=warn "$BIN/paas-agent" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
export PAAS_HOME=$WORK/cli
"$BIN/paas" login "http://$ADDR" -u admin -p bench >/dev/null
TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$WORK/cli/config.json")
for _ in $(seq 1 200); do "$BIN/paas" nodes 2>/dev/null | grep -q ' ready' && break; sleep 0.1; done
# LINES goes in through the command (the CLI has no env command yet).
"$BIN/paas" push "$APP" -p "$WORK/app" -c "LINES=$LINES python3 -u app.py" >/dev/null
CID=$(docker ps -q --filter "label=paas.node=$NODE" --filter "label=paas.app=$APP" | head -1)

echo "binaries: $BIN; lines per run: $LINES; runs: $RUNS"
printf '%-4s %-7s %10s %10s %8s %6s\n' run client seconds lines/s MiB/s lost
for run in $(seq 1 "$RUNS"); do
  python3 "$WORK/run.py" "$run" "$LINES" "$ADDR" "$APP" "$TOKEN" "$CID" "$SERVER_PID" "$AGENT_PID"
done
curl -s "http://$ADDR/metrics" | grep -E '^paas_log_lines_(received|stored|beyond_retention|subscriber_lagged)' || true
