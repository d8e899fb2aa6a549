#!/usr/bin/env python3
"""An upstream for bench/canary.sh: HTTP/1.1 keep-alive, answers 200, or 500 on FAIL_PERCENT of
requests.   canary_upstream.py PORT FAIL_PERCENT"""
import random
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, FAIL = int(sys.argv[1]), float(sys.argv[2])


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        bad = random.random() * 100 < FAIL
        body = b"bad\n" if bad else b"ok\n"
        self.send_response(500 if bad else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), H).serve_forever()
