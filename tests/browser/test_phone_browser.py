"""The page on a phone, against `python app.py --lan` (real worker, HTTPS, the generated login):
at 390 x 844 the voice, the text and Generate come first and Generate is on the first screen; a
phone's AAC/MP4 recording is a prompt; streamed audio starts its Web Audio context inside the tap
on Generate (iOS plays only then); the "Open on your phone" panel's QR code reads as the URL the
console printed; and the desktop layout at 1280 x 800 is the two columns it was.

The browser reaches the app at NETWORK_NAME, which it resolves to 127.0.0.1: every connection
stays on loopback.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.browser import pages
from tests.browser.pages import network_url, screenshot
from tests.qr_codes import decode_image, decode_text_qr, qr_lines

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
# What the page sees of AudioContext.resume: the event being dispatched when it is called (a
# user gesture only while its handler runs: iOS starts audio only then) and the context's state.
RESUME_WATCH = """
window.audioResumes = [];
const resume = AudioContext.prototype.resume;
AudioContext.prototype.resume = function () {
  window.audioResumes.push({ event: window.event ? window.event.type : null, state: this.state });
  return resume.call(this);
};
"""


def box(page, selector: str) -> dict:
    return page.locator(selector).first.bounding_box()


def phone_page(browser, server, **options):
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, locale="en-US",
                                  ignore_https_errors=True, permissions=["microphone"], **options)
    context.add_init_script(RESUME_WATCH)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(network_url(server.url))
    pages.log_in(page, *server.lan_login())
    page.wait_for_function("() => window.cosyfastPlayer !== undefined")
    return page


@pytest.fixture(scope="module")
def m4a_prompt(samples, tmp_path_factory):
    """The speech sample as a phone records it: AAC in a fragmented MP4 (Safari's MediaRecorder)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is needed to make an AAC recording")
    path = tmp_path_factory.mktemp("phone") / "recording.m4a"
    subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(samples["speech"]), "-ar", "48000",
                    "-c:a", "aac", "-b:a", "64k", "-movflags", "frag_keyframe+empty_moov", str(path)],
                   check=True, timeout=60)
    return path


def assert_generate_on_the_first_screen(page) -> None:
    assert page.evaluate("() => window.scrollY") == 0
    generate = box(page, "#cosyfast-generate")
    assert generate["y"] >= 0 and generate["y"] + generate["height"] <= PHONE["height"], generate
    # in the order of use: the voice, its transcript, the text, Generate; the status panel below
    order = [box(page, s)["y"] for s in ("#cosyfast-prompt-audio", "#cosyfast-prompt-text", "#cosyfast-text")]
    assert order == sorted(order) and order[-1] < generate["y"]
    assert box(page, "#cosyfast-status")["y"] > generate["y"] + generate["height"]
    assert box(page, "#cosyfast-mode")["y"] > generate["y"]
    assert pages.horizontal_overflow(page) <= 0


def test_on_a_phone_generate_is_on_the_first_screen_and_an_aac_recording_plays(
        browser, lan_https_server, m4a_prompt, tmp_path):
    page = phone_page(browser, lan_https_server)
    try:
        assert page.evaluate("() => window.isSecureContext")  # https on a network name: it may record
        assert_generate_on_the_first_screen(page)
        page.screenshot(path=str(tmp_path / "phone-empty.png"))
        pages.upload_prompt(page, m4a_prompt)
        assert "4.0 s" in pages.wait_for_notice(page, "Voice ready")
        page.get_by_label("Text to speak").fill("Hi.")
        page.evaluate("() => window.scrollTo(0, 0)")
        page.screenshot(path=str(tmp_path / "phone-ready.png"))
        assert_generate_on_the_first_screen(page)  # with the voice ready, still on the first screen
        page.locator("#cosyfast-generate").tap()
        pages.wait_for_stats(page, "RTF")
        run = pages.player_runs(page)[-1]
        assert run["samples"] > 0 and run["firstSound"] is not None
        resumes = page.evaluate("() => window.audioResumes")
        assert resumes and resumes[0]["event"] in ("touchend", "click"), resumes  # inside the tap
        assert page.evaluate("() => window.cosyfastPlayer.ctx.state") == "running"
        screenshot(page, "phone-lan-done")
        assert not page.errors
    finally:
        page.context.close()


def test_the_phone_panel_shows_the_qr_code_of_the_printed_url(browser, lan_https_server, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US", ignore_https_errors=True)
    try:
        page = context.new_page()
        page.goto(network_url(lan_https_server.url))
        pages.log_in(page, *lan_https_server.lan_login())
        page.get_by_text("Open on your phone").click()
        qr = page.locator("#cosyfast-phone-qr")
        qr.wait_for(state="visible")
        page.wait_for_function("() => document.querySelector('#cosyfast-phone-qr').complete")
        printed = decode_text_qr(qr_lines(lan_https_server.log_path.read_text()))
        assert printed and decode_image(qr.screenshot(path=str(tmp_path / "qr.png"))) == printed
        panel = page.locator("#cosyfast-phone").inner_text()
        assert printed[0] in panel and "self-signed" in panel
        page.screenshot(path=str(tmp_path / "desktop-phone-panel.png"))
    finally:
        context.close()


def test_the_desktop_layout_keeps_its_two_columns(open_page):
    page = open_page("desktop")
    status, audio, mode = (box(page, s) for s in ("#cosyfast-status", "#cosyfast-prompt-audio", "#cosyfast-mode"))
    text, generate = box(page, "#cosyfast-text"), box(page, "#cosyfast-generate")
    assert status["y"] + status["height"] <= audio["y"]  # the status on top
    assert audio["y"] == pytest.approx(mode["y"], abs=2) and audio["x"] + audio["width"] <= mode["x"]  # side by side
    assert generate["x"] >= mode["x"] - 2 and generate["y"] > text["y"]  # Generate under the text, on the right
    assert pages.horizontal_overflow(page) <= 0
    screenshot(page, "desktop-layout")
