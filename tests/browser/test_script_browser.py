"""A dialogue script on the page, in headless Chromium against `python app.py --demo` with the real
worker: two voices saved through the page, a saved voice put into the text at the cursor from the
script menu, the preview of the lines with their voices, an unknown voice refused with its line
before any work, and a three-line script (two voices and a pause) that plays and downloads with
SRT and WebVTT captions whose cues name the voices in order, the pause a gap between them."""

from __future__ import annotations

import io

import pytest
import soundfile as sf

from tests.browser import pages
from tests.test_captions import read_srt, read_vtt

pytestmark = pytest.mark.browser

PAUSE_S = 0.5
SCRIPT = f"[voice:Alice] Hello Bob.\n[pause:{PAUSE_S}s]\n[voice:Bob] Hi Alice."


def save_voice(page, name: str) -> None:
    page.get_by_label("Voice name").fill(name)
    page.get_by_role("button", name="Save voice").click()
    assert pages.wait_for_input_value(page, f"{name} (4.0 s)")


PREVIEW_ROWS = "#cosyfast-script-preview [role=row]"  # the header's, then one per line


def preview_rows(page) -> list[list[str]]:
    """The preview's rows below its header, each as its cells' texts (empty cells left out)."""
    texts = page.locator(PREVIEW_ROWS).evaluate_all("rows => rows.map(r => r.innerText)")
    return [[cell.strip() for cell in text.split("\n") if cell.strip()] for text in texts[1:]]


def test_a_script_with_two_voices_and_a_pause_plays_and_downloads_with_captions(open_page, samples):
    page = open_page()
    pages.upload_prompt(page, samples["speech"])
    pages.wait_for_notice(page, "Voice ready")
    page.get_by_label("Prompt text").fill("hello there")
    page.get_by_text("Saved voices", exact=True).click()
    save_voice(page, "Alice")
    save_voice(page, "Bob")

    text = page.get_by_label("Text to speak")
    text.fill("")
    page.get_by_text("Script: several voices, pauses").click()
    page.get_by_label("Insert a saved voice at the cursor").click()
    page.get_by_role("option", name="Bob", exact=True).click()
    page.wait_for_function("() => document.querySelector('#cosyfast-text textarea').value === '[voice:Bob] '")

    text.fill("[voice:Alice] Hi.\n[voice:Nobody] Who?\n[voice:Nobody] Me.")  # refused before any work
    note = pages.wait_for_text(page, "#cosyfast-script-note", "Nobody")
    assert "lines 2, 3" in note
    pages.generate(page)
    assert "lines 2, 3" in pages.wait_for_stats(page, "⚠")

    text.fill(SCRIPT)
    page.wait_for_function(f"() => document.querySelectorAll('{PREVIEW_ROWS}').length === 4")
    rows = preview_rows(page)
    assert [row[:2] for row in rows] == [["1", "Alice"], ["2", "(pause)"], ["3", "Bob"]]
    pages.screenshot(page, "script")  # at both sizes, nothing sticking out sideways

    pages.generate(page)
    pages.wait_for_stats(page, "RTF")
    audio_s = float(pages.stats_table(page)["Audio"].split()[0])
    files = {name.rsplit(".", 1)[1]: data for name, data in pages.downloads(page).items()}
    assert sorted(files) == ["mp3", "ogg", "srt", "vtt", "wav"]
    wav = sf.info(io.BytesIO(files["wav"]))
    assert wav.duration == pytest.approx(audio_s, abs=0.1) and wav.duration > PAUSE_S
    run = pages.player_runs(page)[-1]  # streamed: the player played the whole script
    assert run["samples"] == pytest.approx(wav.frames, abs=24)
    srt = read_srt(files["srt"].decode("utf-8"))
    assert [body.split(": ", 1)[0] for _, _, body in srt] == ["Alice", "Bob"]
    assert "Hello Bob" in srt[0][2] and "Hi Alice" in srt[1][2]
    assert srt[1][0] - srt[0][1] == pytest.approx(PAUSE_S * 1000, abs=2)
    assert abs(srt[-1][1] - wav.frames / wav.samplerate * 1000) <= 50
    vtt = read_vtt(files["vtt"].decode("utf-8"))
    assert [voice for *_, voice in vtt] == ["Alice", "Bob"] and [c[:2] for c in vtt] == [c[:2] for c in srt]
    assert not page.errors
