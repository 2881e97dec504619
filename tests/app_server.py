"""`python app.py --demo` as a user runs it, in a subprocess on a free port, for the tests that
talk to the real server over HTTP (the browser tests, the page API, the OpenAI-compatible API).

    server = AppServer(tmp_path, ["--max-text-chars", "2000"], auth=("user", "pass"))
    server = AppServer(tmp_path, lan=True)   # --lan: https://127.0.0.1:PORT/, the generated login
    server.wait_ready()          # /health says the worker is ready (asked with the credentials)
    ... server.url ...           # http://127.0.0.1:PORT/
    server.stop()                # SIGTERM, then SIGKILL of its process group
"""

from __future__ import annotations

import base64
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
    with `tls=(certfile, keyfile)`. `auth=(user, password)` starts it with --auth, and `health()`
    then shows those credentials; so does `api_key="KEY"` (--api-key KEY, shown as a Bearer
    token) without `auth`. `lan=True` starts it with --lan and no --host (`host` is then ignored),
    at https://<url_host>:PORT/; `health()` shows the login it generated (`lan_login()`) unless
    `auth` is given. Its log is `root/app.log`, its voices `root/voices`, its cache `root/cache`."""

    def __init__(self, root: Path, args: list[str] = (), host: str = "127.0.0.1",
                 tls: tuple[Path, Path] | None = None, url_host: str = "127.0.0.1",
                 auth: tuple[str, str] | None = None, api_key: str | None = None, lan: bool = False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = root / "app.log"
        self.voices_dir = root / "voices"
        self.cache_dir = root / "cache"
        command = [sys.executable, "app.py", "--demo", "--port", str(self.port), "--cache-dir", str(self.cache_dir),
                   "--voices-dir", str(self.voices_dir), "--device", "cpu", "--backend", "torch",
                   "--hang-timeout", "10", *(["--lan"] if lan else ["--host", host]), *args]
        self.auth, self.api_key = auth, api_key
        if auth:
            command += ["--auth", ":".join(auth)]
        if api_key:
            command += ["--api-key", api_key]
        if tls:
            command += ["--ssl-certfile", str(tls[0]), "--ssl-keyfile", str(tls[1])]
        if tls or lan:
            self.url = f"https://{url_host}:{self.port}/"
        self.lan = lan
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)

    def lan_login(self) -> tuple[str, str] | None:
        """(user, password) that --lan generated and keeps in the cache folder (None before it did)."""
        try:
            user, _, password = (self.cache_dir / "lan" / "login").read_text().strip().partition(":")
        except FileNotFoundError:
            return None
        return user, password

    def credentials(self) -> dict:
        """The Authorization header that shows the server's credentials ({} without any)."""
        auth = self.auth or (self.lan_login() if self.lan else None)
        if auth:
            return {"Authorization": "Basic " + base64.b64encode(":".join(auth).encode()).decode()}
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def health(self) -> dict:
        return get_json(self.url + "health", self.credentials())

    def transcribe_here(self, audio, sample_rate: int) -> str:
        """What the app's demo recogniser (built in its cache on its first use) hears in prompt
        audio, computed in this process."""
        from asr.files import DEMO_NAME
        from asr.prompt import transcribe_prompt
        from asr.recognizer import Recognizer

        recognizer = Recognizer.from_pretrained(self.cache_dir / "models" / DEMO_NAME)
        return transcribe_prompt(recognizer, audio, sample_rate).text

    def wait_ready(self, timeout: float = BOOT_TIMEOUT_S) -> "AppServer":
        self.wait_health(lambda report: report.get("worker", {}).get("state") == "ready", timeout)
        return self

    def wait_health(self, condition, timeout: float) -> dict:
        """Until `condition(/health's report)` holds; returns that report. /health is polled: the
        app offers no event to wait on. Raises when the app exits or the time is up."""
        end = time.monotonic() + timeout
        report = None
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"app exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                report = self.health()
                if condition(report):
                    return report
            except (OSError, ValueError):
                pass
            if time.monotonic() > end:
                raise TimeoutError(f"/health did not get there in {timeout} s; its last report: "
                                   f"{json.dumps(report)}\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 60) -> str:
        """The app log's last `lines` lines, without the access log (polling /health fills it)."""
        log = [line for line in self.log_path.read_text(errors="replace").splitlines() if "uvicorn.access" not in line]
        return "\n".join(log[-lines:])

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
