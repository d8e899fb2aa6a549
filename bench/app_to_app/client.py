"""The caller of bench/app_to_app.sh, run inside the calling container: `client.py HOST PORT N`.
Prints one tab-separated line: keep-alive request p50 and p99 (ms, N requests on one
connection), new-connection request p50 and p99 (ms, N/4 requests, each resolving HOST and
connecting anew), and throughput (MiB/s, 3 x 64 MiB bodies)."""
import http.client
import socket
import sys
import time

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000


def get(conn, path):
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200, r.status
    return len(body)


conn = http.client.HTTPConnection(host, port, timeout=10)
for _ in range(50):  # warm-up
    get(conn, "/")
keep = []
for _ in range(n):
    t = time.perf_counter()
    get(conn, "/")
    keep.append(time.perf_counter() - t)

fresh = []
for _ in range(max(1, n // 4)):
    t = time.perf_counter()
    addr = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    c = http.client.HTTPConnection(addr, port, timeout=10)
    get(c, "/")
    c.close()
    fresh.append(time.perf_counter() - t)

size, t = 0, time.perf_counter()
for _ in range(3):
    size += get(conn, "/blob?mb=64")
mibs = size / (1 << 20) / (time.perf_counter() - t)
print(f"{pct(keep, .5):.3f}\t{pct(keep, .99):.3f}\t{pct(fresh, .5):.3f}\t{pct(fresh, .99):.3f}\t{mibs:.0f}")
