#!/usr/bin/env python3
"""Paced GET load for bench/canary.sh: RATE requests/s through the router to Host, over keep-alive
connections, until killed; prints the counts by status when it ends.
    canary_load.py ADDR HOST RATE"""
import http.client
import signal
import sys
import threading
import time

addr, host, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
h, p = addr.rsplit(":", 1)
# Latency-bound threads: enough that each waits on its pace, not on the answers.
THREADS = max(2, min(64, int(rate // 10)))
stop = threading.Event()
counts = {}
lock = threading.Lock()


def worker():
    period = THREADS / rate
    conn = http.client.HTTPConnection(h, int(p), timeout=10)
    nxt = time.monotonic()
    while not stop.is_set():
        try:
            conn.request("GET", "/", headers={"Host": host})
            r = conn.getresponse()
            r.read()
            k = r.status
        except Exception:
            k = "error"
            conn.close()
            conn = http.client.HTTPConnection(h, int(p), timeout=10)
        with lock:
            counts[k] = counts.get(k, 0) + 1
        nxt += period
        d = nxt - time.monotonic()
        if d > 0:
            time.sleep(d)
        else:
            nxt = time.monotonic()


signal.signal(signal.SIGTERM, lambda *a: stop.set())
ts = [threading.Thread(target=worker, daemon=True) for _ in range(THREADS)]
for t in ts:
    t.start()
start = time.monotonic()
while not stop.is_set():
    time.sleep(0.1)
el = time.monotonic() - start
total = sum(counts.values())
print(f"{total / el:.0f} req/s achieved", dict(counts), flush=True)
