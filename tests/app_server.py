"""`python app.py --demo` as a user runs it, in a subprocess on a free port, for the tests that
talk to the real server over HTTP (the browser tests, the page API, the OpenAI-compatible API).

    server = AppServer(tmp_path, ["--max-text-chars", "2000"])
    server.wait_ready()          # /health says the worker is ready
    ... server.url ...           # http://127.0.0.1:PORT/
    server.stop()                # SIGTERM, then SIGKILL of its process group
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BOOT_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, headers: dict | None = None) -> dict:
    context = ssl._create_unverified_context()  # the tests' self-signed certificate
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:  # 503 while starting or failed: the body still says why
        return json.loads(e.read())


def wait_until(condition, timeout: float, every_s: float = 0.05) -> None:
    """Return once `condition()` is true; AssertionError after `timeout` seconds."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out after {timeout} s"
        time.sleep(every_s)


class AppServer:
    """The app on the demo model (CPU, plain PyTorch) with `args` added to its command line.
    `host` is where it listens; `url` is the loopback address, or `https://<url_host>:PORT/`
    with `tls=(certfile, keyfile)`. Its log is `root/app.log`, its voices `root/voices`."""

    def __init__(self, root: Path, args: list[str] = (), host: str = "127.0.0.1",
                 tls: tuple[Path, Path] | None = None, url_host: str = "127.0.0.1"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = root / "app.log"
        self.voices_dir = root / "voices"
        command = [sys.executable, "app.py", "--demo", "--port", str(self.port), "--cache-dir", str(root / "cache"),
                   "--voices-dir", str(self.voices_dir), "--device", "cpu", "--backend", "torch",
                   "--hang-timeout", "10", "--host", host, *args]
        if tls:
            command += ["--ssl-certfile", str(tls[0]), "--ssl-keyfile", str(tls[1])]
            self.url = f"https://{url_host}:{self.port}/"
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)

    def health(self) -> dict:
        return get_json(self.url + "health")

    def wait_ready(self, timeout: float = BOOT_TIMEOUT_S) -> "AppServer":
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"app exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if self.health()["worker"]["state"] == "ready":
                    return self
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"app not ready after {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.log.close()


@contextmanager
def running_app(root: Path, args: list[str] = (), **options):
    """An AppServer, ready, stopped at the end of the block."""
    server = AppServer(root, args, **options)
    try:
        yield server.wait_ready()
    finally:
        server.stop()
