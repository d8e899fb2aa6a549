"""A tiny web app using only Python's standard library: answers every GET with a greeting.

paas runs it with `python3 app.py` and sets PORT; it logs each request to stdout.
FAIL_PERCENT (0-100) answers that share of requests with a 500, for canary tests (issue 23);
`/session` starts a Java-style session (a `JSESSIONID` cookie), for sticky-session tests.
"""
import json
import os
import random
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "8080"))
GREETING = os.environ.get("GREETING", "Hello from paas")
FAIL_PERCENT = float(os.environ.get("FAIL_PERCENT", "0") or 0)
APP_ID = json.loads(os.environ.get("VCAP_APPLICATION", "{}")).get("application_id")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        cookie = None
        if FAIL_PERCENT > 0 and random.random() * 100 < FAIL_PERCENT:
            data = f"{GREETING}: failing on purpose\n".encode()
            self.send_response(500)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if self.path == "/env":
            body = json.dumps({
                "instance": os.environ.get("PAAS_INSTANCE_INDEX"),
                "hostname": socket.gethostname(),
                "app_id": APP_ID,
                "instance_guid": os.environ.get("CF_INSTANCE_GUID"),
            })
            ctype = "application/json"
        elif self.path == "/session":
            body = f"session on instance {os.environ.get('PAAS_INSTANCE_INDEX', '?')}\n"
            ctype = "text/plain; charset=utf-8"
            cookie = "JSESSIONID=s-" + os.environ.get("PAAS_INSTANCE_INDEX", "0") + "; Path=/"
        else:
            body = f"{GREETING}! (instance {os.environ.get('PAAS_INSTANCE_INDEX', '?')})\n"
            ctype = "text/plain; charset=utf-8"
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        print(f"{self.address_string()} {fmt % args}", flush=True)


if __name__ == "__main__":
    print(f"hello-app listening on port {PORT}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
