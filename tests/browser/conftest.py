"""Fixtures of the browser tests: the real app (`python app.py --demo`, real worker) on a free port,
Debian's Chromium driven by Playwright (fake microphone fed from a wav), and screenshots.

Chromium comes from /usr/bin/chromium, or the path in $COSYFAST_CHROMIUM (never `playwright
install`). Without it, or without Playwright, the browser tests skip; when the environment variable
CI is set they fail instead, so a CI run never passes without having driven the page.
Screenshots go to test-artifacts/screenshots/<state>-<width>x<height>.png.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import soundfile as sf

from tests.app_server import AppServer
from tests.browser.audio_samples import speechlike, write_samples
from tests.browser.pages import NETWORK_NAME, SIZES

CHROMIUM = os.environ.get("COSYFAST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 # a name for the app as another machine on the network would reach it (not
                 # localhost: no secure context without HTTPS), resolved to loopback by the browser
                 f"--host-resolver-rules=MAP {NETWORK_NAME} 127.0.0.1"]
MIC_SECONDS = 6.0  # length of the fake microphone's source file (it loops)
# The app listens on every interface (other machines' view is part of the tests). Tests connect
# only to loopback: `url` is 127.0.0.1, and the browser reaches NETWORK_NAME there too.
APP_ARGS = ["--max-text-chars", "2000"]


def require(present: bool, what: str) -> None:
    """Skip a browser test without `what`; fail it when CI is set."""
    if present:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing, and CI is set: the browser tests must run there", pytrace=False)
    pytest.skip(f"{what} is missing")


@pytest.fixture(scope="session")
def samples(tmp_path_factory):
    return write_samples(tmp_path_factory.mktemp("prompts"))


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    server = AppServer(tmp_path_factory.mktemp("app"), APP_ARGS, host="0.0.0.0")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def lan_https_server(tmp_path_factory):
    """A second app started with --lan (every interface, HTTPS with its self-signed certificate,
    the generated login); the browser reaches it at NETWORK_NAME, as a phone on the network would."""
    server = AppServer(tmp_path_factory.mktemp("lan"), APP_ARGS, lan=True)
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
    require(Path(CHROMIUM).exists(), f"Chromium ({CHROMIUM})")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    require(sync_playwright is not None, "Playwright for Python")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS + [f"--use-file-for-fake-audio-capture={mic_wav}"])
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser, app_server):
    """open_page(size="desktop", locale="en-US") -> a Page on the app, ready to use, in a browser
    of its own; open_page(same_browser_as=page): a new visit in that page's browser (its cookies)."""
    contexts = []

    def open_(size: str = "desktop", locale: str = "en-US", same_browser_as=None):
        width, height = SIZES[size]
        if same_browser_as is not None:
            context = same_browser_as.context
        else:
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

