"""Long texts and takes in headless Chromium against `python app.py --demo` (real worker) started
with a text limit above 20,000 characters: a chapter says it is being read (the worker reads a long
text a block at a time before its audio starts), then shows its progress (segment of total, audio
so far, time left) and Stop ends it; three takes show three players with three seeds, and "Use seed"
puts a take's seed into the seed field."""

from __future__ import annotations

import re

import pytest

from tests.app_server import AppServer
from tests.browser import pages
from tests.browser.conftest import APP_ARGS
from tests.browser.pages import screenshot
from webui import messages as M

pytestmark = pytest.mark.browser

LONG_CHARS = 20_000
SENTENCE = "This is one more sentence of a long chapter read aloud. "
PROGRESS = re.compile(r"segment (\d+) of (\d+), ([\d.]+) s of audio so far, about (\d+:\d\d) left")


@pytest.fixture(scope="module")
def long_server(tmp_path_factory):
    server = AppServer(tmp_path_factory.mktemp("long"), APP_ARGS + ["--max-text-chars", "50000"])
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def page(browser, long_server):
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(long_server.url)
    page.wait_for_function("() => window.cosyfastPlayer !== undefined")
    yield page
    context.close()


def progress_of(page) -> tuple[int, int, float]:
    """(segment, of how many, audio seconds) of the progress line, once it shows them."""
    text = pages.wait_for_stats(page, "segment", timeout_ms=120_000)
    match = PROGRESS.search(text)
    assert match, text
    return int(match[1]), int(match[2]), float(match[3])


def test_a_long_text_shows_its_progress_and_stops(page, long_server, samples):
    text = (SENTENCE * (LONG_CHARS // len(SENTENCE) + 1))[:LONG_CHARS]
    pages.upload_prompt(page, samples["speech"])
    pages.wait_for_notice(page, "Voice ready")
    page.get_by_label("Text to speak").fill(text)
    assert page.locator("#cosyfast-counter").inner_text() == f"{LONG_CHARS} / 50000"
    pages.generate(page)
    pages.wait_for_stats(page, M.notice("reading", M.EN), timeout_ms=60_000)
    first = progress_of(page)
    assert 1 <= first[0] <= first[1] and first[1] > 100  # a chapter: hundreds of sentences
    page.wait_for_function(  # the progress moves on: more audio, or a later segment
        """([segment, audio]) => {
            const m = document.querySelector('#cosyfast-stats').innerText
                .match(/segment (\\d+) of \\d+, ([\\d.]+) s of audio/);
            return m && (Number(m[1]) > segment || Number(m[2]) > audio);
        }""", arg=[first[0], first[2]], timeout=120_000)
    screenshot(page, "long-text-progress")
    assert progress_of(page)[1] == first[1]
    page.locator("#cosyfast-stop").click()
    page.wait_for_function("() => window.cosyfastPlayer.current === null")
    pages.wait_for_stats(page, M.notice("stopped", M.EN))
    long_server.wait_health(lambda report: report["inflight"] == 0, timeout=10)  # the worker request ended
    assert page.get_by_role("button", name="Generate", exact=True).is_enabled()
    assert not page.errors


def test_three_takes_show_three_players_with_their_seeds(page, samples):
    seed_box = "#cosyfast-seed input"
    pages.watch_input(page, seed_box)
    pages.upload_prompt(page, samples["speech"])
    pages.wait_for_notice(page, "Voice ready")
    page.get_by_label("Text to speak").fill("Hi.")
    page.locator("#cosyfast-advanced").get_by_text("Advanced").click()
    pages.set_input(page, seed_box, "41")
    pages.set_input(page, "#cosyfast-takes-count input[type=number]", "3")
    assert page.locator(seed_box).input_value() == "41", pages.watched(page, seed_box)
    pages.generate(page)
    pages.wait_for_stats(page, "RTF")
    page.locator("#cosyfast-take-3").wait_for(timeout=120_000)  # rendered after the last update: a queued event
    labels = [page.locator(f"#cosyfast-take-{n}").inner_text() for n in (1, 2, 3)]
    seeds = [41, 42, 43]
    for n, (label, seed) in enumerate(zip(labels, seeds), 1):
        assert f"Take {n} · seed {seed}" in label, (label, pages.watched(page, seed_box))
    assert page.locator("#cosyfast-take-4").count() == 0
    assert page.locator("#cosyfast-takes .cf-take").count() == 3
    sources = page.locator("#cosyfast-takes audio[src]").evaluate_all("players => players.map(a => a.src)")
    assert len(set(sources)) == 3, sources  # each take plays its own file
    screenshot(page, "takes")
    page.locator("#cosyfast-use-seed-3").click()
    page.wait_for_function("s => document.querySelector(s).value === '43'", arg=seed_box, timeout=60_000)
    assert not page.errors
