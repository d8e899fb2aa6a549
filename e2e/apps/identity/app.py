"""Instance identity probe for the end-to-end tests (issue 25), standard library only.

GET /identity -> JSON: the paths in CF_INSTANCE_CERT / CF_INSTANCE_KEY, the files' text, the
                 CA beside them, who owns the key, and this process's uid and instance guid
GET /headers  -> JSON: the request headers this instance received
GET /mtls     -> JSON: a mutual TLS handshake made with the instance's own credentials, both
                 sides verifying the other's certificate with the platform CA; by default with
                 this instance's own mTLS server (MTLS_PORT, on 127.0.0.1), or with
                 `?addr=HOST:PORT&name=INSTANCE_GUID` another instance's (apps reaching each
                 other directly); `&timeout=SECS` bounds the connect (default 10). The client
                 checks the server's certificate names `name` (the instance guid is a DNS name
                 in every instance certificate); the answer says what each side saw of the
                 other (subject and SAN URIs).

The mTLS server loads the credentials again for every connection, so renewed files are used at
once, as an app that follows rotation should.
"""
import json
import os
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PORT = int(os.environ.get("PORT", "8080"))
MTLS_PORT = int(os.environ.get("MTLS_PORT", "8443"))
CERT = os.environ.get("CF_INSTANCE_CERT", "")
KEY = os.environ.get("CF_INSTANCE_KEY", "")
CA = os.path.join(os.path.dirname(CERT), "ca.crt") if CERT else ""
GUID = os.environ.get("CF_INSTANCE_GUID", "")


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return None


def describe(cert):
    """The parts of a peer certificate (as ssl's getpeercert gives it) a test checks."""
    subject = [f"{k}={v}" for rdn in cert.get("subject", ()) for (k, v) in rdn]
    sans = [f"{k}:{v}" for (k, v) in cert.get("subjectAltName", ())]
    return {"subject": subject, "san": sans, "serial": cert.get("serialNumber")}


def context(side):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if side == "server" else ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_cert_chain(CERT, KEY)
    ctx.load_verify_locations(CA)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def mtls_server():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", MTLS_PORT))
    sock.listen(16)
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=serve_one, args=(conn,), daemon=True).start()


def serve_one(conn):
    try:
        with context("server").wrap_socket(conn, server_side=True) as tls:
            seen = describe(tls.getpeercert())
            tls.sendall(json.dumps(seen).encode() + b"\n")
    except Exception as e:  # a refused handshake is the client's answer
        print(f"mtls server: {e}", flush=True)
        conn.close()


def mtls_client(addr, name, timeout=10.0):
    host, port = addr.rsplit(":", 1)
    try:
        ctx = context("client")
        with socket.create_connection((host, int(port)), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=name) as tls:
                server = describe(tls.getpeercert())
                data = b""
                while not data.endswith(b"\n"):
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    data += chunk
        return {"ok": True, "client_saw": server, "server_saw": json.loads(data)}
    except Exception as e:
        return {"ok": False, "error": str(e)}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/identity":
            try:
                st = os.stat(KEY)
                owner = {"uid": st.st_uid, "mode": oct(st.st_mode & 0o777)}
            except OSError as e:
                owner = {"error": str(e)}
            body = {
                "cert_path": CERT,
                "key_path": KEY,
                "cert": read(CERT),
                "key": read(KEY),
                "ca": read(CA),
                "key_owner": owner,
                "uid": os.getuid(),
                "instance_guid": GUID,
                "vcap": json.loads(os.environ.get("VCAP_APPLICATION", "{}")),
            }
        elif url.path == "/headers":
            body = {k.lower(): v for k, v in self.headers.items()}
        elif url.path == "/mtls":
            q = parse_qs(url.query)
            addr = q.get("addr", [f"127.0.0.1:{MTLS_PORT}"])[0]
            name = q.get("name", [GUID])[0]
            body = mtls_client(addr, name, float(q.get("timeout", ["10"])[0]))
        else:
            body = {"hello": GUID}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    threading.Thread(target=mtls_server, daemon=True).start()
    ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
