"""Long texts through the real worker (supervisor + worker process, demo model, CPU): a worker
killed midway through a chapter loses nothing (the resumed audio equals an undisturbed run's), the
progress says how many segments the text has, and a long request does not starve short ones: their
first chunks come while it is still running (the order of events, not wall-clock thresholds)."""

import os
import queue
import signal
import threading

from tests.conftest import SENTENCE, Outcome, assert_same_audio
from worker.protocol import Chunk, Done, Failed, Progress

CHAPTER = " ".join([SENTENCE] * 30)  # the text front end cuts this into about a dozen segments
SHORTS = 3


def test_a_worker_killed_midway_through_a_long_text_loses_nothing(start_worker, synthesize, request_for,
                                                                  prompt_audio):
    supervisor, client = start_worker()
    prompt = client.prepare_prompt(prompt_audio[0], prompt_audio[1], "a prompt")
    reference = synthesize(client, CHAPTER, prompt=prompt, seed=5)
    assert isinstance(reference.final, Done)
    segments = max(c.segment for c in reference.chunks) + 1
    assert segments >= 8
    middle = segments // 2

    pid = client.health()["worker"]["pid"]
    events = []
    for event in client.submit(request_for(CHAPTER, prompt=prompt, seed=5)):
        events.append(event)
        if isinstance(event, Chunk) and (event.segment, event.index) == (middle, 1):  # midway through a segment
            os.kill(pid, signal.SIGKILL)
    outcome = Outcome(events)

    assert "recovering" in outcome.stages
    assert_same_audio(outcome, reference)
    assert client.health()["worker"]["restarts"] == 1
    # the progress of the resumed attempt counts the whole text's segments
    assert {e.segments for e in outcome.events if isinstance(e, Progress) and e.stage == "synthesis"} == {segments}


def test_short_requests_get_their_first_chunks_while_a_long_one_runs(start_worker, request_for, prompt_audio):
    # with the fixture's 10 s stall bound, this worker was restarted three times in a row on the
    # loaded 2-core machine (busy, no step for 10 s); with 60 s it passes: restarts are not what
    # this test is about (reported to the lead: rounds that long on the CPU demo model)
    supervisor, client = start_worker(stall_timeout_s=60.0)
    prompt = client.prepare_prompt(prompt_audio[0], prompt_audio[1], "a prompt")
    merged: queue.SimpleQueue = queue.SimpleQueue()  # (name, event) in the order they arrive

    def follow(name: str, msg) -> threading.Thread:
        def run():
            for event in client.submit(msg):
                merged.put((name, event))
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    threads = [follow("long", request_for(CHAPTER, prompt=prompt, seed=1))]
    order = []
    while True:  # the long request is under way: its first chunk is out
        name, event = merged.get(timeout=120)
        order.append((name, event))
        if isinstance(event, Chunk):
            break
    threads += [follow(f"short{n}", request_for(prompt=prompt, seed=n)) for n in range(SHORTS)]
    ended = 0
    while ended < SHORTS + 1:
        name, event = merged.get(timeout=120)
        order.append((name, event))
        ended += isinstance(event, (Done, Failed))
    for thread in threads:
        thread.join(10)

    finals = {name: event for name, event in order if isinstance(event, (Done, Failed))}
    assert all(isinstance(event, Done) for event in finals.values()), finals
    long_chunks = [i for i, (name, event) in enumerate(order) if name == "long" and isinstance(event, Chunk)]
    segments = max(order[i][1].segment for i in long_chunks) + 1
    for n in range(SHORTS):
        first = next(i for i, (name, event) in enumerate(order) if name == f"short{n}" and isinstance(event, Chunk))
        long_segment = max(order[i][1].segment for i in long_chunks if i < first)
        # the short one's first audio came while the long one had most of its text still to go
        assert long_segment < segments // 2, (n, long_segment, segments)
        assert sum(i > first for i in long_chunks) > 0


def test_a_page_event_with_a_long_text_fits_the_body_bound():
    """The page's event bodies are read bounded before they are looked at: with a text limit whose
    escaped JSON passes MAX_BODY_BYTES, the bound follows the text limit (as the API's does), so the
    call reaches the session check (403 here: no owner cookie) instead of a 413."""
    import asyncio
    import json
    from concurrent.futures import ThreadPoolExecutor

    from webui.access import MAX_BODY_BYTES, PageAccessMiddleware, text_body_bytes

    chars = 200_000
    body = json.dumps({"data": ["语" * chars], "fn_index": 0, "session_hash": "x"}).encode()  # \uXXXX each
    assert MAX_BODY_BYTES < len(body) <= text_body_bytes(chars)

    def status_of(middleware) -> int:
        sent, parts = [], [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            return parts.pop(0) if parts else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "path": "/gradio_api/queue/join", "method": "POST", "headers": [],
                 "query_string": b""}
        with ThreadPoolExecutor(1) as pool:  # a loop of its own, whatever runs in this thread
            pool.submit(asyncio.run, middleware(scope, receive, send)).result()
        return next(m["status"] for m in sent if m["type"] == "http.response.start")

    public = (frozenset(), frozenset())
    assert status_of(PageAccessMiddleware(None, public)) == 413
    assert status_of(PageAccessMiddleware(None, public, max_body_bytes=text_body_bytes(chars))) == 403
