"""A local HTTP server that plays Hugging Face / ModelScope for the download tests.

Serves `files` (name -> bytes) under /<prefix>/<repo>/resolve/main/<path>, answering what
huggingface_hub asks (`endpoint(prefix)`: the hub's base URL): HEAD with the file's ETag (its
sha256), the commit (`X-Repo-Commit`) and its length, then GET with Range requests honoured; and
plain GETs for a URL template (`template(prefix)`, as ModelScope is fetched). It can cut one
transfer short (`cut`: name -> bytes sent before the connection drops, once) and stay down
afterwards (`down_after_cut`: every later request answered 503 until `down` is cleared), answers
404 for the prefix 'missing', and records every GET: `requests` as (name, Range header), `repos`
as the repository ids asked for; `heads` lists the HEAD requests' names.
"""

from __future__ import annotations

import hashlib
import http.server
import threading

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_files(names) -> dict[str, bytes]:
    """A few kB of distinct bytes per file name."""
    return {name: (name.encode() * 4000)[: 3000 + 17 * i] for i, name in enumerate(names)}


class FakeHub(http.server.ThreadingHTTPServer):
    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        self.heads: list[str] = []
        self.repos: set[str] = set()
        self.cut: dict[str, int] = {}
        self.down_after_cut = False
        self.down = False
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def endpoint(self, prefix: str = "hf") -> str:
        """The base URL of a Hugging Face hub (what `HF_ENDPOINT` names)."""
        return f"http://127.0.0.1:{self.server_address[1]}/{prefix}"

    def template(self, prefix: str = "modelscope") -> str:
        """A URL template with {repo} and {path}, fetched file by file."""
        return self.endpoint(prefix) + "/{repo}/resolve/main/{path}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _file(self) -> tuple[str, bytes | None]:
        hub: FakeHub = self.server
        prefix, rest = self.path.lstrip("/").split("/", 1)
        repo, name = rest.split("/resolve/main/", 1)
        hub.repos.add(repo)
        return name, (None if prefix == "missing" else hub.files.get(name))

    def _refuse(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        hub: FakeHub = self.server
        name, body = self._file()
        hub.heads.append(name)
        if hub.down or body is None:
            self._refuse(503 if hub.down else 404)
            return
        self.send_response(200)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()

    def do_GET(self):
        hub: FakeHub = self.server
        name, body = self._file()
        hub.requests.append((name, self.headers.get("Range")))
        if hub.down or body is None:
            self._refuse(503 if hub.down else 404)
            return
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if name in hub.cut:
            self.wfile.write(body[start:start + hub.cut.pop(name)])
            hub.down = hub.down_after_cut
            self.close_connection = True
            return
        self.wfile.write(body[start:])
