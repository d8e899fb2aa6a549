"""A tiny HTTP server for the Dockerfile example: the image's ENV greeting on `/`, and on
`/whoami` the uid, port and working directory it runs with (JSON)."""
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "8000"))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/whoami":
            body = json.dumps({"uid": os.getuid(), "gid": os.getgid(), "port": PORT, "cwd": os.getcwd()})
            ctype = "application/json"
        else:
            body = f"{os.environ.get('GREETING', 'no greeting')} (uid {os.getuid()})\n"
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
    ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
