"""Static file server for the staticfile buildpack: the standard library's, with explicit content
types (the stack has no /etc/mime.types) and the platform's own files kept private."""
import http.server
import os

ROOT = open("/app/.paas/static-root").read().strip() or "."
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "application/javascript; charset=utf-8",
    ".mjs": "application/javascript; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".wasm": "application/wasm",
    ".woff2": "font/woff2",
}


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **TYPES}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=os.path.join("/app", ROOT), **kwargs)

    def send_head(self):
        if self.path.split("?")[0].lstrip("/").split("/")[0] in (".paas", "Staticfile", "Procfile"):
            self.send_error(404)
            return None
        return super().send_head()


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8080"))
    print(f"staticfile serving {ROOT} on port {port}", flush=True)
    http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
