"""A local HTTP server that plays Hugging Face / ModelScope for the download tests.

Serves `files` (name -> bytes) under /<prefix>/<repo>/resolve/main/<path>, honours Range
requests, can cut one transfer short (`cut`), answers 404 for the prefix 'missing', and records
every request: `requests` as (name, Range header), `repos` as the repository ids asked for.
"""

from __future__ import annotations

import http.server
import threading


def fake_files(names) -> dict[str, bytes]:
    """A few kB of distinct bytes per file name."""
    return {name: (name.encode() * 4000)[: 3000 + 17 * i] for i, name in enumerate(names)}


class FakeHub(http.server.ThreadingHTTPServer):
    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        self.repos: set[str] = set()
        self.cut: dict[str, int] = {}  # file name -> bytes sent before the connection drops (once)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def endpoint(self, prefix: str = "hf") -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{prefix}/{{repo}}/resolve/main/{{path}}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        hub: FakeHub = self.server
        prefix, rest = self.path.lstrip("/").split("/", 1)
        repo, name = rest.split("/resolve/main/", 1)
        hub.requests.append((name, self.headers.get("Range")))
        hub.repos.add(repo)
        if prefix == "missing" or name not in hub.files:
            self.send_error(404)
            return
        body = hub.files[name]
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if name in hub.cut:
            self.wfile.write(body[start:start + hub.cut.pop(name)])
            self.close_connection = True
            return
        self.wfile.write(body[start:])
