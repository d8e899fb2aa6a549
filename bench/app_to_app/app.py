"""The callee of bench/app_to_app.sh, standard library only: `/` answers 2 bytes, `/blob?mb=N`
streams N MiB of zeros. The same file runs as a pushed app and in the plain-bridge peer."""
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

CHUNK = b"\0" * 65536


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle on, the second waits for the client's
    # delayed ACK (40 ms a request), which would hide the network path being measured.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_GET(self):
        u = urlparse(self.path)
        if u.path == "/blob":
            mb = int(parse_qs(u.query).get("mb", ["64"])[0])
            self.send_response(200)
            self.send_header("Content-Length", str(mb * 16 * len(CHUNK)))
            self.end_headers()
            for _ in range(mb * 16):
                self.wfile.write(CHUNK)
            return
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), H).serve_forever()
