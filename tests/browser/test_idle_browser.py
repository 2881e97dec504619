"""The GPU given back when idle, in headless Chromium: `python app.py --demo --idle-release-minutes`
with a tiny idle time. The worker is released (/health says idle, the status panel too), then
Generate wakes it up - the page says it is waking up - and the audio plays."""

from __future__ import annotations

import pytest

from tests.app_server import BOOT_TIMEOUT_S, AppServer
from tests.browser import pages
from tests.browser.conftest import APP_ARGS
from tests.browser.pages import screenshot

pytestmark = pytest.mark.browser

IDLE_MINUTES = 0.02  # 1.2 s without a request


@pytest.fixture(scope="module")
def idle_server(tmp_path_factory):
    server = AppServer(tmp_path_factory.mktemp("idle"), APP_ARGS + ["--idle-release-minutes", str(IDLE_MINUTES)])
    try:
        server.wait_health(lambda report: report.get("worker", {}).get("state") == "idle", BOOT_TIMEOUT_S)
        yield server
    finally:
        server.stop()


def is_idle(report: dict) -> bool:
    return report["status"] == "ok" and report["worker"]["state"] == "idle" and report["worker"]["pid"] is None


def test_an_idle_released_worker_wakes_up_for_the_next_generate(browser, idle_server, samples):
    context = browser.new_context(locale="en-US")
    try:
        page = context.new_page()
        page.errors = []
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.goto(idle_server.url)
        page.wait_for_function("() => window.cosyfastPlayer !== undefined")
        pages.upload_prompt(page, samples["speech"])  # preparing the voice wakes the worker too
        pages.wait_for_notice(page, "Voice ready")
        pages.wait_for_transcript_note(page, "Transcribed automatically", "⚠", "ℹ")
        page.get_by_label("Text to speak").fill("Hi.")

        before = idle_server.wait_health(is_idle, 60)  # released again after the prompt's requests
        pages.wait_for_text(page, "#cosyfast-status", "Idle", timeout_ms=10_000)  # its next refresh
        screenshot(page, "idle")
        pages.generate(page)
        assert "the speech engine was idle" in pages.wait_for_stats(page, "waking", timeout_ms=20_000)
        pages.wait_for_stats(page, "RTF")
        assert pages.player_runs(page)[-1]["samples"] > 0  # the audio played
        after = idle_server.health()
        assert after["worker"]["restarts"] == before["worker"]["restarts"] == 0
        assert after["served"] > before["served"]
        assert not page.errors
    finally:
        context.close()
