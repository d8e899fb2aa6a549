"""A tiny web app using only Python's standard library: answers every GET with a greeting.

paas runs it with `python3 app.py` and sets PORT; it logs each request to stdout.
"""
import json
import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "8080"))
GREETING = os.environ.get("GREETING", "Hello from paas")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/env":
            body = json.dumps({"instance": os.environ.get("PAAS_INSTANCE_INDEX"), "hostname": socket.gethostname()})
            ctype = "application/json"
        else:
            body = f"{GREETING}! (instance {os.environ.get('PAAS_INSTANCE_INDEX', '?')})\n"
            ctype = "text/plain; charset=utf-8"
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        print(f"{self.address_string()} {fmt % args}", flush=True)


if __name__ == "__main__":
    print(f"hello-app listening on port {PORT}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
