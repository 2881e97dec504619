"""What the browser tests do on the page, by its accessible labels: upload or record a prompt,
read the notices, generate and wait, read the player's timings, take screenshots, whose saved
voices a browser holds."""

from __future__ import annotations

import warnings
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout

from webui.access import OWNER_COOKIE

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
NETWORK_NAME = "phone.cosyfast.test"  # the browser resolves it to 127.0.0.1 (conftest's CHROMIUM_ARGS)
GENERATE_TIMEOUT_MS = 300_000  # an upper bound only: a loaded CI machine may be ten times slower


def owner_of_context(context) -> str:
    """The voice owner of a browser (a Playwright context): its owner cookie, as access.owner_of
    names it without --auth."""
    return "browser:" + next(c["value"] for c in context.cookies() if c["name"] == OWNER_COOKIE)


def network_url(url: str) -> str:
    """`url` (an app on 127.0.0.1) as a browser on another machine would name it: not localhost,
    so the page is a secure context only over HTTPS."""
    return url.replace("127.0.0.1", NETWORK_NAME)


def log_in(page, user: str, password: str) -> None:
    """Fill and send Gradio's login form, then wait for the page."""
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()
    page.get_by_role("button", name="Generate", exact=True).wait_for(timeout=60_000)


def screenshot(page, state: str) -> list[Path]:
    """Save the whole page at every size in SIZES as test-artifacts/screenshots/<state>-<w>x<h>.png
    (the page is resized in place, then given its size back); checks that nothing sticks out
    sideways at any size."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    original = page.viewport_size
    paths = []
    for width, height in SIZES.values():
        page.set_viewport_size({"width": width, "height": height})
        next_frames(page)  # the layout of the new size is done
        assert horizontal_overflow(page) <= 0, (state, width)
        paths.append(SCREENSHOTS / f"{state}-{width}x{height}.png")
        page.screenshot(path=str(paths[-1]), full_page=True)
    page.set_viewport_size(original)
    return paths


def next_frames(page, frames: int = 2) -> None:
    """Wait until the browser has drawn `frames` more frames (after a resize: laid out anew)."""
    page.evaluate("""n => new Promise(done => {
        const step = k => k ? requestAnimationFrame(() => step(k - 1)) : done();
        step(n);
    })""", frames)


def horizontal_overflow(page) -> int:
    """How many CSS pixels the page is wider than the viewport (0: no sideways scrolling)."""
    return page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")


def prompt_audio(page):
    return page.locator("#cosyfast-prompt-audio")


def upload_prompt(page, path: Path) -> None:
    """Switch the prompt audio to upload (the microphone is its first source) and send the file."""
    prompt_audio(page).get_by_role("button", name="Upload file").click()
    prompt_audio(page).locator("input[type=file]").set_input_files(str(path))


def record_prompt(page, seconds: int) -> None:
    """Record with the microphone widget until its own clock shows `seconds`, then stop."""
    recorder = prompt_audio(page)
    recorder.get_by_role("button", name="Record", exact=True).click()
    page.wait_for_function(
        "([seconds]) => document.querySelector('#cosyfast-prompt-audio time.duration')?.textContent === seconds",
        arg=[f"0:{seconds:02d}"], timeout=(seconds + 20) * 1000)
    recorder.get_by_role("button", name="Stop", exact=True).first.click()


def clear_prompt(page) -> None:
    prompt_audio(page).get_by_role("button", name="Clear").click()


def recorded_prompt(page) -> bytes:
    """The prompt file the page holds (e.g. what the microphone widget recorded and uploaded)."""
    link = prompt_audio(page).locator("a[download]").first
    return page.request.get(link.get_attribute("href")).body()


def notice(page) -> str:
    return page.locator("#cosyfast-prompt-notice").inner_text()


def wait_for_text(page, selector: str, *texts: str, timeout_ms: int = 60_000) -> str:
    """Wait until the element at `selector` contains one of `texts`; returns its text."""
    page.wait_for_function(
        "([selector, texts]) => texts.some(t => document.querySelector(selector).innerText.includes(t))",
        arg=[selector, list(texts)], timeout=timeout_ms)
    return page.locator(selector).inner_text()


def wait_for_notice(page, *texts: str, timeout_ms: int = 60_000) -> str:
    """Wait until the prompt notice contains one of `texts`; returns the notice."""
    return wait_for_text(page, "#cosyfast-prompt-notice", *texts, timeout_ms=timeout_ms)


def prompt_text(page) -> str:
    """What the transcript box ("Prompt text") holds."""
    return page.get_by_label("Prompt text").input_value()


def wait_for_prompt_text(page, value: str, timeout_ms: int = 60_000) -> None:
    """Wait until the transcript box holds `value`."""
    page.wait_for_function("value => document.querySelector('#cosyfast-prompt-text textarea').value === value",
                           arg=value, timeout=timeout_ms)


def wait_for_transcript_note(page, *texts: str, timeout_ms: int = 60_000) -> str:
    """Wait until the note under the transcript box contains one of `texts`; returns the note."""
    return wait_for_text(page, "#cosyfast-transcript-note", *texts, timeout_ms=timeout_ms)


def wait_for_input_value(page, value: str, present: bool = True, timeout_ms: int = 20_000) -> bool:
    """Wait until some input on the page shows `value` (or, with present=False, none does)."""
    page.wait_for_function(
        "([value, present]) => [...document.querySelectorAll('input')].some(i => i.value === value) === present",
        arg=[value, present], timeout=timeout_ms)
    return True


def set_input(page, selector: str, value: str, tries: int = 3) -> None:
    """Type `value` into the input at `selector` and leave it (blur: Gradio takes the value in)
    without a key that could act elsewhere (Tab moves to the next button, Enter may submit); the
    value must still be there a few frames later. Gradio can put a field's earlier value back
    when it finishes mounting the content of an accordion just opened (seen on loaded CI machines,
    a race no person typing can meet): then it is typed again, with a warning that shows the
    values the field took (`watch_input`); AssertionError if it never keeps it."""
    box = page.locator(selector)
    for attempt in range(tries):
        box.fill(value)
        box.blur()
        try:
            page.wait_for_function("([s, v]) => document.querySelector(s).value === v", arg=[selector, value],
                                   timeout=10_000)
        except PlaywrightTimeout:
            continue
        next_frames(page, 3)
        if box.input_value() == value:
            if attempt:
                warnings.warn(f"{selector}: another value came back after {value!r} was typed ({attempt} time(s)); "
                              f"typed again. The values it took: {watched(page, selector)}")
            return
    raise AssertionError(f"{selector} does not keep {value!r} (it shows {box.input_value()!r}); the values it "
                         f"took: {watched(page, selector)}")


def watch_input(page, selector: str) -> None:
    """Record every value the input at `selector` takes from now on, with the focused element at
    that moment, in window.cosyfastWatched[selector] (what changed a field, when a test fails)."""
    page.evaluate("""s => {
        const seen = (window.cosyfastWatched = window.cosyfastWatched || {})[s] = [];
        let last;
        const look = () => {
            const box = document.querySelector(s), value = box ? box.value : null;
            if (value !== last) {
                const focus = document.activeElement;
                seen.push({value, at_ms: Math.round(performance.now()),
                           focus: focus ? (focus.id || focus.tagName + '.' + focus.className) : null});
                last = value;
            }
            requestAnimationFrame(look);
        };
        look();
    }""", selector)


def watched(page, selector: str) -> list[dict]:
    """The values watch_input recorded for `selector`."""
    return page.evaluate("s => (window.cosyfastWatched || {})[s] || []", selector)


def stats(page) -> str:
    return page.locator("#cosyfast-stats").inner_text()


def wait_for_stats(page, *texts: str, timeout_ms: int = GENERATE_TIMEOUT_MS) -> str:
    return wait_for_text(page, "#cosyfast-stats", *texts, timeout_ms=timeout_ms)


def generate(page) -> None:
    page.get_by_role("button", name="Generate", exact=True).click()


def stats_table(page) -> dict[str, str]:
    """The generation stats as {name: value}."""
    names = page.locator("#cosyfast-stats dt").all_inner_texts()
    values = page.locator("#cosyfast-stats dd").all_inner_texts()
    return dict(zip(names, values))


def player_runs(page) -> list[dict]:
    """window.cosyfastPlayer.history with the timings made relative to the click (seconds)."""
    return page.evaluate("""() => window.cosyfastPlayer.history.map(r => ({
        firstByte: r.firstByteAt === null ? null : (r.firstByteAt - r.clickAt) / 1000,
        firstSound: r.firstSoundAt === null ? null : (r.firstSoundAt - r.clickAt) / 1000,
        samples: r.samples, sampleRate: r.sampleRate, chunks: r.chunks, underruns: r.underruns,
        ended: r.endedAt !== null}))""")


def downloads(page) -> dict[str, bytes]:
    """The files offered for download: {file name: bytes fetched through the page's link}."""
    page.locator("#cosyfast-downloads a[download]").first.wait_for()
    links = page.locator("#cosyfast-downloads a[download]").evaluate_all(
        "links => links.map(a => [a.getAttribute('download'), a.href])")
    return {name: page.request.get(href).body() for name, href in links}
