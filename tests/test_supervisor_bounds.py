"""Limits checked before the worker, cancellation, deadlines, retries running out, recycling and
shutdown, with a real worker process on the demo model."""

import time

import numpy as np
import psutil

from tests.conftest import TWO_SEGMENTS, next_heartbeats
from tests.envelopes import synthesize_msg
from worker.protocol import (
    BAD_INPUT,
    CANCELLED,
    INTERNAL,
    OVERLOADED,
    TIMEOUT,
    TOO_LONG,
    WORKER_CRASHED,
    Chunk,
    Done,
    Failed,
    PreparePrompt,
)

LONG_TOKENS = 200  # speech tokens per segment of a request that should still run when the test acts


def test_full_queue_is_refused_at_once(start_worker, request_for):
    supervisor, client = start_worker(max_queue=2)
    running = [client.submit(request_for(TWO_SEGMENTS, forced_tokens=LONG_TOKENS)) for _ in range(2)]
    t0 = time.monotonic()
    refused = list(client.submit(request_for(TWO_SEGMENTS, forced_tokens=LONG_TOKENS)))
    assert time.monotonic() - t0 < 0.1
    assert len(refused) == 1 and refused[0].code == OVERLOADED
    for stream in running:
        stream.close()


def test_bad_requests_are_refused_before_the_worker(start_worker, request_for):
    supervisor, client = start_worker()
    silence = np.zeros(31 * 24000, np.float32)
    cases = [(request_for("x" * 5001), TOO_LONG), (request_for("   "), BAD_INPUT),
             (request_for(mode="whisper"), BAD_INPUT), (request_for(seed=2**32 + 1), BAD_INPUT),
             (request_for(prompt_audio=silence, prompt_sample_rate=24000), TOO_LONG),
             (request_for(prompt_audio=silence[:0], prompt_sample_rate=24000), BAD_INPUT),
             (synthesize_msg("", "Hello."), BAD_INPUT)]
    steps = client.health()["worker"]["steps"]
    for msg, code in cases:
        events = list(client.submit(msg))
        assert len(events) == 1 and isinstance(events[0], Failed) and events[0].code == code, (msg.spec.text[:9], events)
    next_heartbeats(supervisor, 3)  # what the worker did meanwhile: nothing
    assert client.health()["worker"]["steps"] == steps and client.health()["served"] == 0


def test_cancel_stops_the_work_in_the_worker(start_worker, request_for):
    supervisor, client = start_worker()
    stream = client.submit(request_for(TWO_SEGMENTS, forced_tokens=LONG_TOKENS))
    first = next(e for e in stream if isinstance(e, Chunk))
    assert first.seq == 0
    assert supervisor.wait_for(lambda: stream.request_id in client.health()["worker"]["busy"], 5)
    client.cancel(stream.request_id)
    rest = list(stream)
    assert isinstance(rest[-1], Failed) and rest[-1].code == CANCELLED
    assert supervisor.wait_for(lambda: client.health()["worker"]["busy"] == [], 5)
    next_heartbeats(supervisor, 2)  # the step that was running when the cancel arrived has ended
    steps = client.health()["worker"]["steps"]
    next_heartbeats(supervisor, 5)
    assert client.health()["worker"]["steps"] == steps  # nothing runs any more


def test_closing_an_event_stream_cancels_its_request(start_worker, request_for):
    supervisor, client = start_worker()
    stream = client.submit(request_for(TWO_SEGMENTS, forced_tokens=LONG_TOKENS))
    next(e for e in stream if isinstance(e, Chunk))
    stream.close()
    assert supervisor.wait_for(lambda: client.health()["worker"]["busy"] == [] and client.health()["inflight"] == 0, 5)


def test_deadline_answers_timeout_and_frees_the_worker(start_worker, request_for):
    supervisor, client = start_worker()
    t0 = time.monotonic()
    events = list(client.submit(request_for(TWO_SEGMENTS, forced_tokens=LONG_TOKENS, timeout_s=0.5)))
    assert isinstance(events[-1], Failed) and events[-1].code == TIMEOUT
    assert 0.5 <= time.monotonic() - t0 < 1.5
    assert supervisor.wait_for(lambda: client.health()["worker"]["busy"] == [], 5)


def test_a_request_that_kills_every_worker_fails_after_the_last_attempt(start_worker, synthesize):
    supervisor, client = start_worker(max_attempts=2)
    outcome = synthesize(client, fault={"kind": "crash", "step": 2, "attempts": [0, 1]})
    assert isinstance(outcome.final, Failed) and outcome.final.code == WORKER_CRASHED
    assert "crashed 2 times" in outcome.final.message
    assert outcome.stages.count("recovering") == 1
    assert client.wait_ready(30)
    health = client.health()
    assert health["worker"]["restarts"] == 2 and health["status"] == "ok"
    assert isinstance(synthesize(client).final, Done)  # the next request is served


def test_worker_is_recycled_after_n_requests(start_worker, synthesize):
    supervisor, client = start_worker(recycle_after=2)
    pid = client.health()["worker"]["pid"]
    for _ in range(2):
        assert isinstance(synthesize(client).final, Done)
    assert supervisor.wait_for(lambda: client.health()["worker"]["restarts"] == 1, 5)
    assert client.wait_ready(30)
    health = client.health()
    assert health["worker"]["last_restart_cause"] == "recycled" and health["worker"]["pid"] != pid
    assert isinstance(synthesize(client).final, Done)


def test_requests_wait_for_a_booting_worker(start_worker, synthesize):
    supervisor, client = start_worker(wait=False)
    outcome = synthesize(client)
    assert isinstance(outcome.final, Done)
    assert "loading" in outcome.stages  # the caller saw the boot progress


def test_prepare_prompt_round_trip(start_worker, prompt_audio, synthesize):
    supervisor, client = start_worker()
    prompt = client.prepare_prompt(prompt_audio[0], prompt_audio[1], "a prompt")
    assert prompt.text == "a prompt" and len(prompt.speech_tokens) > 0
    outcome = synthesize(client, prompt=prompt)
    assert isinstance(outcome.final, Done) and len(outcome.pcm) > 0
    refused = list(client.submit(PreparePrompt("", np.zeros(24000 * 40, np.float32), 24000)))
    assert refused[-1].code == TOO_LONG


def test_stop_answers_open_requests_and_ends_the_worker_within_5_s(start_worker, request_for):
    supervisor, client = start_worker()
    pid = client.health()["worker"]["pid"]
    stream = client.submit(request_for(TWO_SEGMENTS, forced_tokens=LONG_TOKENS))
    next(e for e in stream if isinstance(e, Chunk))
    t0 = time.monotonic()
    supervisor.stop(timeout=5)
    assert time.monotonic() - t0 < 5 and not psutil.pid_exists(pid)
    assert isinstance(list(stream)[-1], Failed)
    assert client.health()["status"] == "stopped"
    late = list(client.submit(request_for(TWO_SEGMENTS, forced_tokens=LONG_TOKENS)))
    assert len(late) == 1 and late[0].code == INTERNAL and "shutting down" in late[0].message


def test_a_long_text_gets_a_deadline_in_proportion():
    """The default deadline holds up to request_timeout_chars and grows with the text beyond: a
    50,000-character chapter gets ten times the ten minutes; a request's own timeout_s wins."""
    from cosyvoice3.spec import SpeechSpec
    from worker.protocol import Synthesize
    from worker.supervisor import SupervisorConfig

    config = SupervisorConfig()
    short, chapter = (Synthesize("r", SpeechSpec("a" * n)) for n in (config.request_timeout_chars, 50_000))
    assert config.timeout_for(short) == config.request_timeout_s
    assert config.timeout_for(chapter) == config.request_timeout_s * 50_000 / config.request_timeout_chars
    assert config.timeout_for(Synthesize("r", SpeechSpec("a" * 50_000), timeout_s=2.0)) == 2.0
