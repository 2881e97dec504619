"""Fixtures of the browser tests: the real app (`python app.py --demo`, real worker) on a free port,
Debian's Chromium driven by Playwright (fake microphone fed from a wav), and screenshots.

Chromium comes from /usr/bin/chromium (never `playwright install`); without it these tests skip.
Screenshots go to test-artifacts/screenshots/<state>-<width>x<height>.png.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf

from tests.browser.audio_samples import speechlike, write_samples
from tests.browser.pages import REPO, SIZES, lan_address

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
MIC_SECONDS = 6.0  # length of the fake microphone's source file (it loops)
BOOT_TIMEOUT_S = 180

if not Path(CHROMIUM).exists():
    pytest.skip("Debian chromium is not installed at /usr/bin/chromium", allow_module_level=True)
sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict:
    context = ssl._create_unverified_context()  # the tests' self-signed certificate
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:  # 503 while starting or failed: the body still says why
        return json.loads(e.read())


class AppServer:
    """`python app.py --demo` in a subprocess; `health()` reads its /health.
    It listens on every interface (other machines' view is part of the tests); `url` is the
    loopback one. With `tls=(certfile, keyfile)` it serves HTTPS and `url` uses this machine's LAN
    address, as a phone on the network would."""

    def __init__(self, root: Path, tls: tuple[Path, Path] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = root / "app.log"
        self.voices_dir = root / "voices"
        command = [sys.executable, "app.py", "--demo", "--port", str(self.port), "--cache-dir", str(root / "cache"),
                   "--voices-dir", str(self.voices_dir), "--device", "cpu", "--backend", "torch",
                   "--hang-timeout", "10", "--max-text-chars", "2000", "--host", "0.0.0.0"]
        if tls:
            command += ["--ssl-certfile", str(tls[0]), "--ssl-keyfile", str(tls[1])]
            self.url = f"https://{lan_address()}:{self.port}/"
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)

    def health(self) -> dict:
        return get_json(self.url + "health")

    def wait_ready(self, timeout: float = BOOT_TIMEOUT_S) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"app exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if self.health()["worker"]["state"] == "ready":
                    return
            except OSError:
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


@pytest.fixture(scope="session")
def samples(tmp_path_factory):
    return write_samples(tmp_path_factory.mktemp("prompts"))


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    server = AppServer(tmp_path_factory.mktemp("app"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def lan_https_server(tmp_path_factory):
    """A second app on every interface with a self-signed certificate for its LAN address."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    root = tmp_path_factory.mktemp("lan")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=cosyfast-test", "-addext", f"subjectAltName=IP:{lan_address()}"],
                   check=True, capture_output=True, timeout=60)
    server = AppServer(root, tls=(cert, key))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mic_wav(tmp_path_factory) -> Path:
    """What Chromium's fake microphone plays: speech-like audio at 48 kHz, 16-bit."""
    path = tmp_path_factory.mktemp("mic") / "mic.wav"
    sf.write(path, speechlike(MIC_SECONDS, 48000, seed=5), 48000, subtype="PCM_16")
    return path


@pytest.fixture(scope="session")
def browser(mic_wav):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS + [f"--use-file-for-fake-audio-capture={mic_wav}"])
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser, app_server):
    """open_page(size="desktop", locale="en-US") -> a Page on the app, ready to use."""
    contexts = []

    def open_(size: str = "desktop", locale: str = "en-US"):
        width, height = SIZES[size]
        context = browser.new_context(viewport={"width": width, "height": height}, locale=locale,
                                      permissions=["microphone"])
        contexts.append(context)
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.goto(app_server.url)
        page.get_by_role("button", name="Generate" if locale.startswith("en") else "生成").wait_for()
        page.wait_for_function("() => window.cosyfastPlayer !== undefined")
        return page

    yield open_
    for context in contexts:
        context.close()

