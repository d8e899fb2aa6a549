#!/usr/bin/env python3
"""Opens N keep-alive HTTP/1.1 connections to HOST:PORT, makes one request on each (Host header
given), then holds them all idle: prints "ready OPEN" once every connection has had its answer,
waits until stdin closes, checks every connection is still open (a request on each answers 200)
and prints "alive K".

    bench/idle_conns.py 127.0.0.1 8080 app.localhost 10000
"""
import asyncio
import sys


async def one(host, port, vhost):
    reader, writer = await asyncio.open_connection(host, port)
    await request(reader, writer, vhost)
    return reader, writer


async def request(reader, writer, vhost):
    writer.write(f"GET / HTTP/1.1\r\nHost: {vhost}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    if status != b"200":
        raise RuntimeError(f"status {status!r}")


async def main():
    host, port, vhost, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    conns = []
    # In batches, so the listener's accept backlog is never the limit.
    for start in range(0, n, 500):
        conns += await asyncio.gather(*(one(host, port, vhost) for _ in range(start, min(n, start + 500))))
    print(f"ready {len(conns)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    alive = 0
    for start in range(0, n, 500):
        results = await asyncio.gather(
            *(request(r, w, vhost) for r, w in conns[start : start + 500]), return_exceptions=True
        )
        alive += sum(1 for x in results if x is None)
    print(f"alive {alive}", flush=True)
    for _, w in conns:
        w.close()


asyncio.run(main())
