"""A Python app with a dependency installed from a vendored wheel (vendor/greetlib-1.0-...)."""
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import greetlib


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = (greetlib.greet("paas") + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Handler).serve_forever()
