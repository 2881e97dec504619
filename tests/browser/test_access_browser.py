"""Access between visitors, against the real app: raw HTTP clients that never loaded the page, and
two browsers (two Playwright contexts: two cookie jars, as two people have).

Internal endpoints are refused to callers that are not the page; a page session (Gradio's
session_hash) belongs to its browser; saved voices belong to the browser that saved them; and
nothing another visitor does (polling hundreds of made-up stream ids, polling or stopping the
live stream's own id) disturbs a live streaming generation.
"""

from __future__ import annotations

import asyncio
import json
import secrets

import httpx
import pytest

from tests.async_util import run_coroutine
from tests.browser import pages
from webui.access import OWNER_COOKIE
from webui.voices import VoiceLibrary

pytestmark = pytest.mark.browser

INTERNAL = ("save_voice", "delete_voice", "pick_voice", "generate", "stop", "refresh_voices", "status")
LONG_TEXT = " ".join(["This sentence makes the generation take a few seconds, so the test can act meanwhile."] * 3)
FLOOD = 300  # more than the hub held before it evicted its oldest stream (256)


class RawVisitor:
    """A script speaking Gradio's HTTP protocol directly; `load_page()` gets it the cookie a
    browser gets with the page."""

    def __init__(self, url: str):
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=30)
        self.config = self.http.get("config").json()
        self.session = secrets.token_hex(6)

    def load_page(self) -> "RawVisitor":
        self.http.get("")
        assert OWNER_COOKIE in self.http.cookies
        return self

    def fn(self, api_name: str) -> dict:
        return next(d for d in self.config["dependencies"] if d.get("api_name") == api_name)

    def join(self, api_name: str, data: list, session: str | None = None) -> httpx.Response:
        dependency = self.fn(api_name)
        return self.http.post("gradio_api/queue/join", json={
            "data": data, "fn_index": dependency["id"], "session_hash": session or self.session,
            "event_data": None, "trigger_id": None})

    def run(self, api_name: str, data: list, session: str | None = None) -> httpx.Response:
        """A direct call, as the page makes for its unqueued events."""
        dependency = self.fn(api_name)
        return self.http.post("gradio_api/run/predict", json={
            "data": data, "fn_index": dependency["id"], "session_hash": session or self.session,
            "event_data": None, "trigger_id": None})

    def player_id(self) -> int:
        return next(c["id"] for c in self.config["components"] if c.get("props", {}).get("elem_id") == "cosyfast-player")

    def poll_body(self, stream_id: str, session: str | None = None) -> dict:
        return {"session_hash": session or self.session, "component_id": self.player_id(), "fn_name": "read_stream",
                "data": {"id": stream_id, "start": 0}}

    def poll(self, stream_id: str) -> httpx.Response:
        return self.http.post("gradio_api/component_server", json=self.poll_body(stream_id))

    def close(self) -> None:
        self.http.close()


def inputs_of(visitor: RawVisitor, api_name: str) -> list:
    return [None] * len(visitor.fn(api_name)["inputs"])


def open_visitor(browser, app_server):
    """A new browser (own cookies) on the app, with the session hash of its page recorded."""
    context = browser.new_context(locale="en-US", permissions=["microphone"])
    page = context.new_page()
    sessions = []
    page.on("request", lambda r: sessions.append(json.loads(r.post_data)["session_hash"])
            if r.method == "POST" and "/gradio_api/" in r.url and "session_hash" in (r.post_data or "") else None)
    page.goto(app_server.url)
    page.get_by_role("button", name="Generate", exact=True).wait_for()
    page.wait_for_function("() => window.cosyfastPlayer !== undefined")
    page.wait_for_function("() => document.querySelector('#cosyfast-status').innerText.includes('Ready')")
    assert sessions, "the page sent no event yet"
    page.session = sessions[0]
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    return context, page


def test_internal_endpoints_are_refused_to_callers_that_are_not_the_page(app_server):
    outsider = RawVisitor(app_server.url)
    try:
        for name in INTERNAL:
            data = inputs_of(outsider, name)
            assert outsider.join(name, data).status_code == 403, name
            assert outsider.run(name, data).status_code == 403, name
            assert outsider.http.post(f"gradio_api/run/{name}", json={"data": data}).status_code == 403, name
            assert outsider.http.post(f"gradio_api/call/{name}", json={"data": data}).status_code == 403, name
            # the fn_index as Gradio reads it (a string or a float is coerced), and call/ by its name only
            for fn_index in (str(outsider.fn(name)["id"]), float(outsider.fn(name)["id"])):
                body = {"data": data, "fn_index": fn_index, "session_hash": outsider.session}
                assert outsider.http.post("gradio_api/run/predict", json=body).status_code == 403, (name, fn_index)
            public = {"data": data, "fn_index": outsider.fn("synthesize")["id"], "session_hash": outsider.session}
            assert outsider.http.post(f"gradio_api/call/{name}", json=public).status_code == 403, name
        assert outsider.poll(secrets.token_hex(16)).status_code == 403
        endpoints = outsider.http.get("gradio_api/info").json()["named_endpoints"]
        assert sorted(endpoints) == ["/synthesize", "/synthesize_captioned", "/synthesize_takes"]
    finally:
        outsider.close()


def test_a_page_session_belongs_to_its_browser(browser, app_server, samples):
    context, page = open_visitor(browser, app_server)
    intruder = RawVisitor(app_server.url).load_page()  # a cookie of its own, the page's session hash
    try:
        assert intruder.join("refresh_voices", [], session=page.session).status_code == 403
        assert intruder.run("status", [], session=page.session).status_code == 403
        listen = intruder.http.get("gradio_api/queue/data", params={"session_hash": page.session})
        assert listen.status_code == 403
        cancel = intruder.http.post("gradio_api/cancel", json={"session_hash": page.session, "fn_index": 0,
                                                               "event_id": "x"})
        assert cancel.status_code == 403
        assert intruder.join("refresh_voices", []).status_code == 200  # its own session works
        pages.upload_prompt(page, samples["speech"])  # and the page goes on working
        pages.wait_for_notice(page, "Voice ready")
        page.get_by_label("Text to speak").fill("Hi.")
        pages.generate(page)
        pages.wait_for_stats(page, "RTF")
        assert not page.errors
    finally:
        intruder.close()
        context.close()


def test_saved_voices_belong_to_the_browser_that_saved_them(browser, app_server, samples):
    alice_context, alice = open_visitor(browser, app_server)
    bob_context, bob = open_visitor(browser, app_server)
    try:
        pages.upload_prompt(alice, samples["speech"])
        pages.wait_for_notice(alice, "Voice ready")
        alice.get_by_text("Saved voices", exact=True).click()
        alice.get_by_label("Voice name").fill("Alice only")
        alice.get_by_role("button", name="Save voice").click()
        assert pages.wait_for_input_value(alice, "Alice only (4.0 s)")
        library = VoiceLibrary(app_server.voices_dir)
        [saved] = library.list(pages.owner_of_context(alice_context))

        bob.reload()  # a fresh look at the dropdown
        bob.get_by_role("button", name="Generate", exact=True).wait_for()
        bob.get_by_text("Saved voices", exact=True).click()
        bob.get_by_label("Saved voice", exact=True).click()
        assert bob.get_by_role("option", name="Alice only (4.0 s)").count() == 0
        # Bob's own browser cookie in a script: the voice list the page asks for, then delete_voice
        # and pick_voice called with Alice's voice id directly
        bob_visitor = RawVisitor(app_server.url)
        bob_visitor.http.cookies.set(OWNER_COOKIE, pages.owner_of_context(bob_context).split(":", 1)[1])
        listed = bob_visitor.run("refresh_voices", [])
        assert listed.status_code == 200 and saved.voice_id not in listed.text
        for name in ("delete_voice", "pick_voice"):
            reply = bob_visitor.run(name, [saved.voice_id])  # refused (not among Bob's choices) or a no-op
            assert "Alice only" not in reply.text, (name, reply.text)
        assert [v.voice_id for v in library.list(pages.owner_of_context(alice_context))] == [saved.voice_id]
        assert library.list(pages.owner_of_context(bob_context)) == []

        alice.reload()  # Alice, back later in the same browser, finds it
        alice.get_by_role("button", name="Generate", exact=True).wait_for()
        alice.get_by_text("Saved voices", exact=True).click()
        alice.get_by_label("Saved voice", exact=True).click()
        alice.get_by_role("option", name="Alice only (4.0 s)").click()
        assert "Alice only" in pages.wait_for_notice(alice, "saved voice")
        bob_visitor.close()
    finally:
        alice_context.close()
        bob_context.close()


def test_nothing_another_visitor_does_disturbs_a_live_stream(browser, app_server, samples):
    context, page = open_visitor(browser, app_server)
    other = RawVisitor(app_server.url).load_page()
    try:
        pages.upload_prompt(page, samples["speech"])
        pages.wait_for_notice(page, "Voice ready")
        page.get_by_label("Text to speak").fill(LONG_TEXT)
        pages.generate(page)
        page.wait_for_function(  # the press's run is in the history once the click's handler ran
            "() => { const run = window.cosyfastPlayer.history.at(-1); return run !== undefined && run.firstByteAt !== null; }",
            timeout=120_000)
        run_id = page.evaluate("() => window.cosyfastPlayer.runId")

        async def flood() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=app_server.url, cookies=other.http.cookies, timeout=60) as http:
                bodies = [other.poll_body(secrets.token_hex(16)) for _ in range(FLOOD)] + [other.poll_body(run_id)]
                return await asyncio.gather(*(http.post("gradio_api/component_server", json=b) for b in bodies))

        replies = run_coroutine(flood())
        assert all(r.status_code == 200 and not r.json()["chunks"] for r in replies)  # nothing, not even its id
        assert other.run("stop", [run_id]).status_code == 200  # another's Stop with the live run's id
        pages.wait_for_stats(page, "RTF")
        table = pages.stats_table(page)
        audio_s = float(table["Audio"].split()[0])
        run = pages.player_runs(page)[-1]
        assert run["ended"] and run["samples"] == pytest.approx(audio_s * 24000, abs=24), (run, table)
        assert not page.errors
    finally:
        other.close()
        context.close()
