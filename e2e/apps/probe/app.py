"""Router probe for the end-to-end tests, standard library only.

GET /          -> JSON: this instance's index and the request headers it received
GET /ws        -> WebSocket echo (RFC 6455 handshake and framing, text and binary)
POST /         -> echoes the body, after `X-Delay-Ms` milliseconds when that header is sent
                  (a slow request in flight; SIGTERM's default action kills it mid-way)
GET /line      -> with `Upgrade: line-echo`: 101, then each line sent comes back upper-cased
                  (a protocol that is not WebSocket, the way CONNECT-style tunnels or h2c work)
GET /stall     -> headers and half of a 10-byte body, then `X-Delay-Ms` (default 30000) of
                  silence before the rest (a hung instance mid-body)
Speaks HTTP/1.1 keep-alive, like most real apps, so the router's pooled connections are used.
"""
import base64
import hashlib
import json
import os
import struct
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "8080"))
INDEX = os.environ.get("PAAS_INSTANCE_INDEX", "?")
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        if self.path == "/line" and self.headers.get("Upgrade", "").lower() == "line-echo":
            return self.line_echo()
        if self.path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", "10")
            self.end_headers()
            self.wfile.write(b"01234")
            self.wfile.flush()
            time.sleep(int(self.headers.get("X-Delay-Ms", "30000")) / 1000)
            self.wfile.write(b"56789")
            return
        body = json.dumps({"instance": INDEX, "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(n)
        delay = int(self.headers.get("X-Delay-Ms", "0"))
        if delay:
            time.sleep(delay / 1000)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def websocket(self):
        key = self.headers["Sec-WebSocket-Key"].encode()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        rf, wf = self.rfile, self.wfile
        while True:
            head = rf.read(2)
            if len(head) < 2:
                return
            opcode, n = head[0] & 0x0F, head[1] & 0x7F
            if n == 126:
                n = struct.unpack(">H", rf.read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", rf.read(8))[0]
            mask = rf.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(rf.read(n)))
            if opcode == 8:  # close: answer and stop
                wf.write(bytes([0x88, 0]))
                wf.flush()
                self.close_connection = True
                return
            if opcode == 9:  # ping -> pong
                opcode = 10
            elif opcode not in (1, 2):
                continue
            if len(data) < 126:
                hdr = bytes([0x80 | opcode, len(data)])
            elif len(data) < 65536:
                hdr = bytes([0x80 | opcode, 126]) + struct.pack(">H", len(data))
            else:
                hdr = bytes([0x80 | opcode, 127]) + struct.pack(">Q", len(data))
            wf.write(hdr + data)
            wf.flush()

    def line_echo(self):
        self.send_response(101)
        self.send_header("Upgrade", "line-echo")
        self.send_header("Connection", "Upgrade")
        self.end_headers()
        self.wfile.flush()
        for line in self.rfile:
            if line.strip() == b"bye":
                break
            self.wfile.write(line.upper())
            self.wfile.flush()
        self.close_connection = True

    def log_message(self, fmt, *args):
        pass


if __name__ == "__main__":
    print(f"probe listening on port {PORT} (instance {INDEX})", flush=True)
    ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
