#!/usr/bin/env bash
# Router throughput, latency and CPU against nginx, in one run, alternating:
#   (a) direct  - wrk straight at the upstream (a static nginx serving a 612-byte page)
#   (b) nginx   - an nginx reverse proxy (keep-alive pool to the upstream) in front of it
#   (c) router  - paas-server's router in front of the same upstream, reached as APP.localhost
# The upstream is cheap on purpose, so the proxy is what is measured. The router gets its route
# the real way: the app is pushed to a real controller, and a stand-in node (bench/fake_node.py,
# the real agent protocol) reports the instance running on the upstream's port.
#
#   cargo build --release -p paas-server -p paas && bench/router.sh [ROUNDS] [DURATION] [CONNECTIONS]
#   (defaults: 3 rounds, 5s, connections "1 8 64 256"; wrk with 2 threads, 1 for 1 connection)
#   Every connection count is measured twice: keep-alive, and a new connection per request
#   (wrk with `Connection: close`, which both proxies answer by closing); MODES="keepalive" or
#   MODES="close" measures one of them. Per cell: req/s, added p50/p99 (against the upstream
#   directly), CPU per request, and the router/nginx ratios (median and min-max of the rounds).
#   PAAS_SERVER=/path/to/paas-server bench/router.sh ...   (measure another build, e.g. a baseline)
#   PERF_DATA=/tmp/rtr.perf MODES=keepalive bench/router.sh 1 5s 8
#                                                          (profile the router while it is measured;
#                                                           PERF_CALLGRAPH=dwarf for call graphs)
#   SYSCALLS=1 bench/router.sh 1                           (system calls per request, nginx and router)
#   IDLE=10000 bench/router.sh 5                           (memory held per idle keep-alive client
#                                                           connection, nginx and router, no wrk)
#
# CPU time per 10k requests is the proxy's own utime+stime from /proc/PID/stat (all nginx
# processes of that instance; the whole paas-server process, controller included).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${1:-3}
DUR=${2:-5s}
CONNS=${3:-1 8 64 256}
CONNS=${CONNS//,/ }
MODES=${MODES:-keepalive close}
THREADS=2
BIN=$ROOT/target/release
SERVER=${PAAS_SERVER:-$BIN/paas-server}
[ -x "$SERVER" ] || { echo "build first: cargo build --release -p paas-server" >&2; exit 1; }
CLI=$BIN/paas
[ -x "$CLI" ] || CLI=$ROOT/target/debug/paas
[ -x "$CLI" ] || { echo "build the CLI first: cargo build -p paas" >&2; exit 1; }
command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "needs wrk and nginx (Debian: wrk nginx-light)" >&2; exit 1; }

# Idle connections need a descriptor each in the client and the proxy.
if [ -n "${IDLE:-}" ]; then
  ulimit -n "$(ulimit -Hn)"
  [ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -gt $((IDLE + 1000)) ] ||
    { echo "IDLE=$IDLE needs more open files than the hard limit ($(ulimit -Hn))" >&2; exit 1; }
fi
WORKER_CONNS=$(( ${IDLE:-0} + 4096 ))

WORK=$(mktemp -d /tmp/paas-rtr-bench.XXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
UP=$(free_port)
NG=$(free_port)
USER_LINE=""
[ "$(id -u)" = 0 ] && USER_LINE="user root;"

mkdir -p "$WORK/www" "$WORK/up" "$WORK/ng"
head -c 612 /dev/zero | tr '\0' 'x' >"$WORK/www/index.html"
common_http="client_body_temp_path $WORK/tmp-body; proxy_temp_path $WORK/tmp-proxy; fastcgi_temp_path $WORK/tmp-fcgi; uwsgi_temp_path $WORK/tmp-uwsgi; scgi_temp_path $WORK/tmp-scgi; keepalive_requests 1000000;"
cat >"$WORK/up/nginx.conf" <<EOF
$USER_LINE
worker_processes 1;
daemon off;
pid $WORK/up/nginx.pid;
error_log $WORK/up/error.log;
events { worker_connections 4096; }
http { $common_http access_log off; server { listen 127.0.0.1:$UP; root $WORK/www; } }
EOF
# The nginx proxy: one worker per core, as the router runs one actix worker per core; an access
# log (buffered), as the router writes one RTR line per request.
cat >"$WORK/ng/nginx.conf" <<EOF
$USER_LINE
worker_processes $(nproc);
daemon off;
pid $WORK/ng/nginx.pid;
error_log $WORK/ng/error.log;
events { worker_connections $WORKER_CONNS; }
http {
  $common_http
  access_log $WORK/ng/access.log combined buffer=64k flush=1s;
  upstream app { server 127.0.0.1:$UP; keepalive 128; }
  server {
    listen 127.0.0.1:$NG;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
      proxy_set_header X-Request-Id \$request_id;
    }
  }
}
EOF
nginx -p "$WORK/up" -e "$WORK/up/error.log" -c "$WORK/up/nginx.conf" &
PIDS+=($!)
UP_PID=$!
nginx -p "$WORK/ng" -e "$WORK/ng/error.log" -c "$WORK/ng/nginx.conf" &
PIDS+=($!)
NG_PID=$!

# The router: a release paas-server. Its per-request `paas::http` line is turned off, since the
# RTR access-log line (written in batches to the store) is the router's access log.
PAAS_DATA_DIR=$WORK/server PAAS_LISTEN=127.0.0.1:0 PAAS_ADMIN_PASSWORD=bench RUST_LOG="info,paas::http=warn" \
  "$SERVER" >"$WORK/server.log" 2>&1 &
PIDS+=($!)
SRV_PID=$!
# Both files appear during startup, the join token last; on a loaded machine that can take seconds.
for _ in $(seq 1 600); do [ -f "$WORK/server/listen-addr" ] && [ -f "$WORK/server/join-token" ] && break; sleep 0.05; done
ADDR=$(cat "$WORK/server/listen-addr")
python3 bench/fake_node.py "http://$ADDR" "$(cat "$WORK/server/join-token")" "bench-$$" "$UP" >"$WORK/node.log" 2>&1 &
PIDS+=($!)
export PAAS_HOME=$WORK/cli
"$CLI" login "http://$ADDR" -u admin -p bench >/dev/null
for _ in $(seq 1 100); do "$CLI" nodes 2>/dev/null | grep -q ' ready' && break; sleep 0.1; done
"$CLI" push bench -p examples/python-app >/dev/null

check() { # URL [Host]
  curl -sf -o /dev/null --max-time 2 ${2:+-H "Host: $2"} "$1" || { echo "no 200 from $1 ${2:-}" >&2; cat "$WORK/server.log" >&2; exit 1; }
}
check "http://127.0.0.1:$UP/"
check "http://127.0.0.1:$NG/"
check "http://$ADDR/" "bench.localhost"

ticks() { # total utime+stime of the given pids and their children (nginx workers)
  local t=0 p
  for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}

RESULTS=$WORK/results.tsv

# IDLE=N: how much memory each proxy holds per idle keep-alive client connection. Per round and
# proxy (alternating): RSS of the proxy's processes, then N connections each make one request and
# stay open, RSS again; then one more request on each connection shows they were all kept.
if [ -n "${IDLE:-}" ]; then
  rss_kib() { # total VmRSS of the given pids and their children (nginx workers)
    local t=0 p
    for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
      t=$((t + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status")))
    done
    echo "$t"
  }
  idle() { # NAME PORT HOST PIDS...
    local name=$1 port=$2 host=$3; shift 3
    local before after alive
    rm -f "$WORK/idle.in" "$WORK/idle.out"
    mkfifo "$WORK/idle.in"
    before=$(rss_kib "$@")
    python3 bench/idle_conns.py 127.0.0.1 "$port" "$host" "$IDLE" <"$WORK/idle.in" >"$WORK/idle.out" &
    local client=$!
    exec 7>"$WORK/idle.in"
    for _ in $(seq 1 1200); do grep -q '^ready' "$WORK/idle.out" 2>/dev/null && break; kill -0 $client 2>/dev/null || break; sleep 0.1; done
    grep -q '^ready' "$WORK/idle.out" || { echo "$name: the idle connections did not all open" >&2; exec 7>&-; exit 1; }
    after=$(rss_kib "$@")
    exec 7>&-
    wait $client
    alive=$(sed -n 's/^alive //p' "$WORK/idle.out")
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$before" "$after" "$(( (after - before) * 1024 / IDLE ))" "$alive" | tee -a "$RESULTS"
  }
  echo "# $IDLE idle keep-alive connections, $ROUNDS rounds, $(nproc) cores"
  printf 'proxy\trss_before_kib\trss_with_idle_kib\tbytes_per_conn\tstill_open\n'
  for r in $(seq 1 "$ROUNDS"); do
    idle nginx "$NG" "bench.localhost" "$NG_PID"
    idle router "${ADDR##*:}" "bench.localhost" "$SRV_PID"
  done
  python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
# Memory freed when the connections close stays with the process (allocator, nginx's connection
# pool), so a later round starts from what an earlier one left: the first round of each proxy
# is the clean figure; later rounds show whether memory grows further (it should not).
print("\n| proxy | bytes per idle connection, first round | later rounds | RSS with them open |")
print("| --- | --- | --- | --- |")
first = {}
for name in ("nginx", "router"):
    rs = [r for r in rows if r[0] == name]
    first[name] = max(1, int(rs[0][3]))
    later = ", ".join(r[3] for r in rs[1:])
    peak = max(int(r[2]) for r in rs) // 1024
    kept = min(int(r[4]) for r in rs)
    print(f"| {name} | {int(rs[0][3]):,} | {later} | {peak} MiB, {kept} kept open |")
print(f"\nrouter/nginx bytes per idle connection (first round): {first['router'] / first['nginx']:.1f}x")
EOF
  exit 0
fi
run() { # MODE CONNS NAME URL HOST PIDS...
  local mode=$1 conns=$2 name=$3 url=$4 host=$5; shift 5
  local t0 t1 out threads=$THREADS close=()
  [ "$conns" -ge "$threads" ] || threads=$conns
  [ "$mode" = close ] && close=(-H 'Connection: close')
  t0=$(ticks "$@")
  # PERF_DATA=FILE: also sample the router's CPU (flat profile by symbol) during its runs, to see
  # where the time goes (`perf report -i FILE --no-children --sort dso,sym`). Slows it a little.
  # With more than one cell, each cell's profile is FILE-MODE-CONNS (the last round's).
  local perf_pid=""
  if [ -n "${PERF_DATA:-}" ] && [ "$name" = router ]; then
    local pf=$PERF_DATA
    [ "$NCELLS" = 1 ] || pf=$PERF_DATA-$mode-$conns
    perf record -q -F 997 ${PERF_CALLGRAPH:+--call-graph $PERF_CALLGRAPH} -p "$1" -o "$pf" -- sleep "${DUR%s}" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  # SYSCALLS=1: also count the proxy's system calls by kind (per request, in syscalls.tsv), to
  # compare what each proxy asks of the kernel for the same traffic.
  local sc_pid=""
  if [ -n "${SYSCALLS:-}" ] && [ "$name" != direct ]; then
    local pids
    pids=$(echo "$@" $(for q in "$@"; do pgrep -P "$q" || true; done) | tr ' ' ',')
    perf stat -x, -e 'syscalls:sys_enter_*' -p "$pids" -o "$WORK/sc-$name.txt" -- sleep "${DUR%s}" >/dev/null 2>&1 &
    sc_pid=$!
  fi
  out=$(wrk -t"$threads" -c"$conns" -d"$DUR" --latency -H "Host: $host" "${close[@]}" "$url")
  t1=$(ticks "$@")
  [ -z "$perf_pid" ] || wait "$perf_pid" || true
  if [ -n "$sc_pid" ]; then
    wait "$sc_pid" || true
    reqs=$(echo "$out" | sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')
    awk -F, -v n="$name" -v c="$mode/$conns" -v r="$reqs" '$1 ~ /^[0-9]+$/ && $1 > r/100 {sub("syscalls:sys_enter_", "", $3); printf "%s\t%s\t%s\t%.2f\n", c, n, $3, $1 / r}' \
      "$WORK/sc-$name.txt" | sort -k4 -rn >>"$WORK/syscalls.tsv"
  fi
  echo "$out" | python3 -c '
import re, sys
mode, conns, name, ticks, clk = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
text = sys.stdin.read()
def ms(v):
    n, u = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
reqs = int(re.search(r"(\d+) requests in", text).group(1))
p50 = ms(re.search(r"\s50%\s+(\S+)", text).group(1))
p99 = ms(re.search(r"\s99%\s+(\S+)", text).group(1))
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
sock = re.search(r"Socket errors: (.*)", text)
cpu = ticks / clk / max(reqs, 1) * 10000
non2xx = errs.group(1) if errs else "0"
sockerr = sock.group(1).replace(" ", "") if sock else "-"
print("\t".join([mode, conns, name, f"{rps:.0f}", f"{p50:.3f}", f"{p99:.3f}", f"{cpu:.3f}", non2xx, sockerr]))
' "$mode" "$conns" "$name" "$((t1 - t0))" "$(getconf CLK_TCK)" | tee -a "$RESULTS"
}

# Every cell (connection count x keep-alive or a new connection per request) in every round;
# nginx and the router swap places round by round, so neither always runs on a machine the
# other just warmed (or heated). `direct` runs first in each cell: the baseline for added latency.
CELLS=()
for mode in $MODES; do for c in $CONNS; do CELLS+=("$mode $c"); done; done
NCELLS=${#CELLS[@]}
echo "# wrk -t$THREADS -c{$CONNS} -d$DUR, modes: $MODES, $ROUNDS rounds, $(nproc) cores; $(uptime)"
printf 'mode\tconns\ttarget\treq/s\tp50_ms\tp99_ms\tcpu_s_per_10k\tnon2xx\tsocket_errors\n'
for r in $(seq 1 "$ROUNDS"); do
  for cell in "${CELLS[@]}"; do
    set -- $cell
    run "$1" "$2" direct "http://127.0.0.1:$UP/" "127.0.0.1" "$UP_PID"
    if [ $((r % 2)) = 1 ]; then
      run "$1" "$2" nginx "http://127.0.0.1:$NG/" "bench.localhost" "$NG_PID"
      run "$1" "$2" router "http://$ADDR/" "bench.localhost" "$SRV_PID"
    else
      run "$1" "$2" router "http://$ADDR/" "bench.localhost" "$SRV_PID"
      run "$1" "$2" nginx "http://127.0.0.1:$NG/" "bench.localhost" "$NG_PID"
    fi
  done
done
echo "# load at the end: $(uptime)"

if [ -n "${SYSCALLS:-}" ]; then
  echo "# system calls per request (over 1 in 100 requests), per cell, every round"
  cat "$WORK/syscalls.tsv"
fi

python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
cells = []
for r in rows:
    if (r[0], r[1]) not in cells:
        cells.append((r[0], r[1]))
med = statistics.median
def col(mode, conns, name, i):
    return [float(r[i]) for r in rows if (r[0], r[1], r[2]) == (mode, conns, name)]
def spread(xs, f="{:.0f}"):
    return f"{f.format(med(xs))} ({f.format(min(xs))}-{f.format(max(xs))})"
print("\nMedian (min-max) over the rounds; added latency = target's median minus direct's; ratios are")
print("router/nginx per round (the two ran back to back), their median (min-max).")
print("\n| mode | conns | nginx req/s | router req/s | router/nginx req/s | added p50 nginx / router ms "
      "| added p99 nginx / router ms | CPU s/10k nginx / router | router/nginx CPU | errors |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for mode, conns in cells:
    d = {n: [col(mode, conns, n, i) for i in (3, 4, 5, 6)] for n in ("direct", "nginx", "router")}
    rps_ratio = [a / b for a, b in zip(d["router"][0], d["nginx"][0])]
    cpu_ratio = [a / b for a, b in zip(d["router"][3], d["nginx"][3])]
    add = lambda n, i: med(d[n][i]) - med(d["direct"][i])
    errs = [r for r in rows if (r[0], r[1]) == (mode, conns) and r[2] != "direct" and (r[7] != "0" or r[8] != "-")]
    err = "; ".join(f"{r[2]} non2xx={r[7]} sock={r[8]}" for r in errs) or "none"
    print(f"| {mode} | {conns} | {spread(d['nginx'][0])} | {spread(d['router'][0])} | {spread(rps_ratio, '{:.2f}')} "
          f"| {add('nginx', 1):.3f} / {add('router', 1):.3f} | {add('nginx', 2):.3f} / {add('router', 2):.3f} "
          f"| {med(d['nginx'][3]):.3f} / {med(d['router'][3]):.3f} | {spread(cpu_ratio, '{:.2f}')} | {err} |")
EOF
