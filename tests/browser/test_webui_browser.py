"""The page in headless Chromium against `python app.py --demo` with the real worker.

Covers the issue's done-when list: upload + dialect preset + generate + stats (and time to first
sound of the streaming player); recording through the microphone widget (Chromium's fake capture)
reaching the worker, the transcript box filling by itself with what the recogniser heard and
Generate staying zero-shot; typed transcripts never replaced; every bad prompt's message with the page usable afterwards; the worker
restarting mid-request ("recovering"); gradio_client calling /synthesize; screenshots of the main
states at 1280x800 and 390x844 with no sideways overflow; Chinese labels for a Chinese browser.
"""

from __future__ import annotations

import io
import os
import signal
import time

import numpy as np
import pytest
import soundfile as sf

from tests.browser import pages
from tests.browser.pages import network_url, screenshot
from webui import messages as M
from webui.media import read_prompt_audio
from webui.voices import VoiceLibrary

pytestmark = pytest.mark.browser

SHORT = "Hi."  # the demo model never stops by itself: it speaks 20 tokens per text token
# about 50 s of demo audio (a few seconds of work): long enough to stop or kill the worker midway
LONG_TEXT = " ".join(["This sentence makes the generation take a few seconds, so the test can act meanwhile."] * 3)
PLAYER_BUDGET_S = 0.5  # the limit on what playback may add after the first chunk


def test_upload_pick_a_dialect_generate_and_read_the_stats(open_page, samples):
    page = open_page("desktop")
    screenshot(page, "empty")
    pages.upload_prompt(page, samples["speech"])
    assert "4.0 s" in pages.wait_for_notice(page, "Voice ready")
    page.get_by_label("Instruction", exact=True).click()
    page.get_by_role("option", name="四川话 · Sichuan").click()
    assert page.get_by_role("radio", name="Instruct").is_checked()  # a preset switches the mode
    page.get_by_label("Text to speak").fill("Hi, 你好.")
    assert page.locator("#cosyfast-counter").inner_text() == "7 / 2000"
    pages.generate(page)
    pages.wait_for_stats(page, "RTF")
    table = pages.stats_table(page)
    audio_s, wall_s = float(table["Audio"].split()[0]), float(table["Wall time"].split()[0])
    first_chunk_s, rtf = float(table["First chunk"].split()[0]), float(table["RTF"])
    assert audio_s > 0.1 and 0 < first_chunk_s <= wall_s and rtf == pytest.approx(wall_s / audio_s, abs=0.01)
    assert "llm torch" in table["Backend"]
    files = {name.rsplit(".", 1)[1]: data for name, data in pages.downloads(page).items()}
    assert sorted(files) == ["mp3", "ogg", "srt", "vtt", "wav"]  # the audio and its captions
    assert files["srt"].decode("utf-8").startswith("1\n00:00:00,000 --> ")  # (test_script_browser.py reads them)
    for data in (files[ext] for ext in ("mp3", "ogg", "wav")):
        info = sf.info(io.BytesIO(data))
        assert info.samplerate == 24000 and info.duration == pytest.approx(audio_s, abs=0.1)
    run = pages.player_runs(page)[-1]
    assert run["sampleRate"] == 24000 and run["samples"] == pytest.approx(audio_s * 24000, abs=24)
    # time to first sound in the browser: the player adds little to the first chunk's latency
    assert run["firstSound"] is not None and run["firstSound"] - first_chunk_s < PLAYER_BUDGET_S, (run, table)
    assert not page.errors
    screenshot(page, "result")


def test_a_phone_sized_page_works_the_same(open_page, samples):
    phone = open_page("phone")
    pages.upload_prompt(phone, samples["speech"])
    pages.wait_for_notice(phone, "Voice ready")
    phone.get_by_label("Text to speak").fill(SHORT)
    pages.generate(phone)
    pages.wait_for_stats(phone, "RTF")
    assert pages.horizontal_overflow(phone) <= 0 and not phone.errors


def test_microphone_recording_reaches_the_worker(open_page, app_server):
    served = app_server.health()["served"]
    page = open_page()
    pages.record_prompt(page, 4)
    text = pages.wait_for_notice(page, "Voice ready", "⚠")
    assert "Voice ready" in text, text
    seconds = float(text.split("Voice ready: ")[1].split(" s")[0])
    assert 2.5 <= seconds <= 5.0  # about the 4 s recorded, measured by the worker's prompt front end
    # then the transcript box fills by itself, with what the worker's recogniser heard
    note = pages.wait_for_transcript_note(page, "Transcribed automatically", "⚠", "ℹ")
    assert "Transcribed automatically" in note and "Demo recogniser" in note, note
    assert app_server.health()["served"] == served + 2  # the worker prepared it and transcribed it
    # what the browser sent is the fake microphone's file: speech-like with its f0 near 140 Hz
    recorded, rate = sf.read(io.BytesIO(pages.recorded_prompt(page)), dtype="float32", always_2d=True)
    spectrum = np.abs(np.fft.rfft(recorded.mean(axis=1)))
    freqs = np.fft.rfftfreq(len(recorded), 1 / rate)
    band = (freqs > 50) & (freqs < 1000)
    assert 100 < freqs[band][np.argmax(spectrum[band])] < 180
    assert abs(len(recorded) / rate - seconds) < 1.0
    heard = app_server.transcribe_here(*read_prompt_audio(pages.recorded_prompt(page), 30.0))
    assert heard and pages.prompt_text(page) == heard
    assert page.get_by_role("radio", name="Zero-shot clone").is_checked()
    assert page.locator("#cosyfast-mode-note").inner_text().strip() == ""  # no "cross-lingual" note
    screenshot(page, "transcribed")
    page.get_by_label("Text to speak").fill(SHORT)
    pages.generate(page)
    pages.wait_for_stats(page, "RTF")
    assert page.get_by_role("radio", name="Zero-shot clone").is_checked()  # it ran zero-shot, not cross-lingual


def test_a_new_prompt_replaces_the_automatic_transcript_never_typed_words(open_page, app_server, samples):
    page = open_page()
    pages.upload_prompt(page, samples["speech"])
    pages.wait_for_transcript_note(page, "Transcribed automatically")
    first = app_server.transcribe_here(*read_prompt_audio(samples["speech"], 30.0))
    assert pages.prompt_text(page) == first
    pages.clear_prompt(page)
    pages.wait_for_prompt_text(page, "")  # the automatic transcript goes with its prompt
    pages.upload_prompt(page, samples["speech44k"])
    pages.wait_for_transcript_note(page, "Transcribed automatically")
    assert pages.prompt_text(page) == app_server.transcribe_here(*read_prompt_audio(samples["speech44k"], 30.0))
    page.get_by_label("Prompt text").fill("my own words")
    pages.clear_prompt(page)
    pages.upload_prompt(page, samples["speech"])  # typed words stay
    assert M.notice("transcript_kept", M.EN) in pages.wait_for_transcript_note(page, "Kept")
    assert pages.prompt_text(page) == "my own words"
    page.get_by_label("Prompt text").fill("")
    pages.clear_prompt(page)
    pages.upload_prompt(page, samples["speech"])  # an emptied box fills again
    pages.wait_for_transcript_note(page, "Transcribed automatically")
    assert pages.prompt_text(page) == first
    assert not page.errors


@pytest.mark.parametrize("kind, problem", [("short", M.TOO_SHORT), ("silent", M.SILENT),
                                           ("corrupt", M.UNREADABLE), ("long", M.TOO_LONG)])
def test_bad_prompts_say_why_and_the_page_stays_usable(open_page, samples, kind, problem):
    page = open_page()
    pages.upload_prompt(page, samples[kind])
    expected = M.prompt_sentence(problem, M.EN, 30.0)
    assert expected in pages.wait_for_notice(page, "⚠")
    keep_first = page.get_by_role("button", name="Keep the first 30 s")
    if problem == M.TOO_LONG:
        screenshot(page, "error")
        keep_first.click()
        assert "Kept the first 30 seconds" in pages.wait_for_notice(page, "Voice ready")
    else:
        assert keep_first.is_hidden()
        pages.clear_prompt(page)
        pages.upload_prompt(page, samples["speech"])
        pages.wait_for_notice(page, "Voice ready")
    pages.wait_for_transcript_note(page, "Transcribed automatically")  # the kept 30 s are transcribed too
    assert pages.prompt_text(page)
    page.get_by_label("Text to speak").fill(SHORT)
    pages.generate(page)
    # a 30 s prompt conditions the flow on 30 s of mel: on a busy CPU it takes longer than a 4 s one
    pages.wait_for_stats(page, "RTF", timeout_ms=pages.GENERATE_TIMEOUT_MS * (3 if problem == M.TOO_LONG else 1))
    assert not page.errors


def test_voice_library_save_reload_pick_and_delete(open_page, samples, app_server):
    page = open_page()
    pages.upload_prompt(page, samples["speech"])
    pages.wait_for_notice(page, "Voice ready")
    page.get_by_label("Prompt text").fill("hello there")
    page.get_by_text("Saved voices", exact=True).click()
    page.get_by_label("Voice name").fill("Browser voice")
    page.get_by_role("button", name="Save voice").click()
    assert pages.wait_for_input_value(page, "Browser voice (4.0 s)")
    owner = pages.owner_of_context(page.context)
    assert [v.name for v in VoiceLibrary(app_server.voices_dir).list(owner)] == ["Browser voice"]  # on disk
    page = open_page(same_browser_as=page)  # a new visit in the same browser: pick it instead of recording
    page.get_by_text("Saved voices", exact=True).click()
    page.get_by_label("Saved voice", exact=True).click()
    page.get_by_role("option", name="Browser voice (4.0 s)").click()
    assert "Browser voice" in pages.wait_for_notice(page, "saved voice")
    assert page.get_by_label("Prompt text").input_value() == "hello there"
    page.get_by_label("Text to speak").fill(SHORT)
    pages.generate(page)
    pages.wait_for_stats(page, "RTF")
    page.get_by_role("button", name="Delete").click()
    assert pages.wait_for_input_value(page, "Browser voice (4.0 s)", present=False)
    assert VoiceLibrary(app_server.voices_dir).list(owner) == []


def test_errors_in_the_page_for_a_missing_prompt_and_text(open_page):
    page = open_page()
    pages.generate(page)
    assert pages.wait_for_stats(page, "⚠") == "⚠ " + M.notice("need_text", M.EN)
    page.get_by_label("Text to speak").fill("No voice yet.")
    pages.generate(page)
    assert pages.wait_for_stats(page, M.notice("need_prompt", M.EN))
    screenshot(page, "error-no-prompt")


def test_worker_restart_mid_request_shows_recovering_and_finishes(open_page, app_server, samples):
    page = open_page()
    pages.upload_prompt(page, samples["speech"])
    pages.wait_for_notice(page, "Voice ready")
    pages.wait_for_transcript_note(page, "Transcribed automatically", "⚠", "ℹ")  # only synthesis is in flight
    page.get_by_label("Text to speak").fill(LONG_TEXT)
    restarts = app_server.health()["worker"]["restarts"]
    pages.generate(page)
    pages.wait_for_stats(page, "Generating")
    screenshot(page, "generating")
    os.kill(app_server.health()["worker"]["pid"], signal.SIGKILL)
    pages.wait_for_stats(page, M.notice("recovering", M.EN), timeout_ms=20_000)
    page.wait_for_function("() => document.querySelector('#cosyfast-status').innerText.includes('Recovering')",
                           timeout=10_000)
    screenshot(page, "recovering")
    pages.wait_for_stats(page, "RTF")
    health = app_server.health()
    assert health["worker"]["restarts"] == restarts + 1 and health["worker"]["last_restart_cause"] == "crashed"
    assert not page.errors


def test_lan_browsers_can_record_over_https(browser, lan_https_server):
    context = browser.new_context(locale="en-US", ignore_https_errors=True, permissions=["microphone"])
    try:
        page = context.new_page()
        page.goto(network_url(lan_https_server.url))
        pages.log_in(page, *lan_https_server.lan_login())
        page.wait_for_function("() => window.cosyfastPlayer !== undefined", timeout=60_000)
        assert page.evaluate("() => window.isSecureContext")
        assert page.locator("#cosyfast-mic-note").is_hidden()  # the "needs HTTPS" note is for plain http
        pages.record_prompt(page, 3)
        assert "Voice ready" in pages.wait_for_notice(page, "Voice ready", "⚠")
    finally:
        context.close()


def test_plain_http_from_the_network_explains_the_microphone_and_still_works(browser, app_server, samples):
    """Without TLS a browser on another machine may not record: the page says what to do, and
    uploading, generating and streamed playback work all the same."""
    context = browser.new_context(locale="en-US")
    try:
        page = context.new_page()
        page.goto(network_url(app_server.url))
        page.wait_for_function("() => window.cosyfastPlayer !== undefined")
        assert page.evaluate("() => window.isSecureContext") is False
        page.locator("#cosyfast-mic-note").wait_for(state="visible")
        assert "--ssl-certfile" in page.locator("#cosyfast-mic-note").inner_text()
        pages.upload_prompt(page, samples["speech"])
        pages.wait_for_notice(page, "Voice ready")
        page.get_by_label("Text to speak").fill(SHORT)
        pages.generate(page)
        pages.wait_for_stats(page, "RTF")
        assert pages.player_runs(page)[-1]["samples"] > 0
    finally:
        context.close()


def test_stop_ends_playback_and_the_worker_request(open_page, app_server, samples):
    page = open_page()
    pages.upload_prompt(page, samples["speech"])
    pages.wait_for_notice(page, "Voice ready")
    page.get_by_label("Text to speak").fill(LONG_TEXT)
    pages.generate(page)
    pages.wait_for_stats(page, "Generating")
    page.locator("#cosyfast-stop").click()
    page.wait_for_function("() => window.cosyfastPlayer.current === null")
    assert pages.wait_for_stats(page, M.notice("stopped", M.EN))
    app_server.wait_health(lambda report: report["inflight"] == 0, timeout=10)  # the worker request ended
    assert pages.player_runs(page)[-1]["ended"]
    assert page.get_by_role("button", name="Generate", exact=True).is_enabled()
    assert not page.errors


def test_gradio_client_synthesize_returns_a_24k_wav(app_server, samples):
    from gradio_client import Client, handle_file

    client = Client(app_server.url, verbose=False)
    started = time.perf_counter()
    path = client.predict(SHORT, "instruct", handle_file(str(samples["speech"])), "",
                          "Cantonese", 11, 1.0, api_name="/synthesize")
    info = sf.info(path)
    assert info.samplerate == 24000 and info.channels == 1 and info.frames > 2400 and info.format == "WAV"
    assert time.perf_counter() - started < 60
    path = client.predict(SHORT, "zero_shot", handle_file(str(samples["speech"])), "", "", 0, 1.0,
                          api_name="/synthesize")  # no prompt text: the prompt is transcribed
    assert sf.info(path).frames > 2400
    with pytest.raises(Exception, match="silent"):
        client.predict("Hello.", "zero_shot", handle_file(str(samples["silent"])), "", "", 0, 1.0,
                       api_name="/synthesize")


def test_scripts_find_the_components_by_their_labels(open_page):
    page = open_page()
    page.get_by_role("group", name="Output audio").wait_for()
    for label in ("Prompt audio", "Mode", "Instruction", "Text to speak", "Output audio", "Status"):
        assert page.get_by_label(label, exact=True).count() == 1, label
    assert page.get_by_label("Prompt text").count() == 1  # its accessible name goes on with the hint
    assert page.get_by_role("button", name="Generate", exact=True).count() == 1
    assert page.get_by_role("group", name="Mode").get_by_role("radio", name="Instruct").count() == 1


def test_a_chinese_browser_gets_chinese_labels(open_page):
    page = open_page("desktop", locale="zh-CN")
    for label in ("参考音频", "参考文本", "模式", "合成文本"):
        assert page.get_by_label(label, exact=True).count() >= 1 or page.get_by_text(label, exact=True).count() >= 1
    assert page.get_by_role("button", name="生成").is_visible()
    page.wait_for_function("() => document.querySelector('#cosyfast-status').innerText.includes('就绪')")
    screenshot(page, "empty-zh")
