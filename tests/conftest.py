"""Shared fixtures: the demo model, a prompt recording, supervised workers with short timeouts,
and a helper that runs one synthesis request to its end."""

from __future__ import annotations

import os
import queue
import select
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

# Without a GPU, Triton kernels (engines/llm_triton.py) run in Triton's interpreter; it is chosen
# when a kernel is defined, so before anything imports them.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Short requests: the demo model never stops on its own, so the speech token count is forced.
SHORT_TEXT = "Hello there."
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank today."
TWO_SEGMENTS = " ".join([SENTENCE] * 5)  # the text front end cuts this into two segments
FORCED_TOKENS = 30  # streaming: two chunks per segment
# A worker's first start with backend "auto" exports and times every module (about a minute on a
# busy 2-core CPU); later starts load what it built.
BOOT_TIMEOUT_S = 300


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory) -> Path:
    from cosyvoice3.tools.demo import ensure_demo_model

    return ensure_demo_model(tmp_path_factory.mktemp("demo") / "model")


@pytest.fixture(scope="session")
def demo_asr_dir(tmp_path_factory) -> Path:
    """The tiny random recogniser (SenseVoice-Small layout) the project builds."""
    from asr.demo import ensure_demo_recognizer

    return ensure_demo_recognizer(tmp_path_factory.mktemp("asr") / "recognizer")


@pytest.fixture(scope="session")
def prompt_audio() -> tuple[np.ndarray, int]:
    """2 s of a 24 kHz prompt recording (float32 mono; 50 speech tokens: the first streaming chunk
    comes after 28 generated tokens; short prompts keep the tests fast) and its
    sample rate."""
    audio, rate = sf.read(GOLDEN / "prompt_24k.wav", dtype="float32")
    return audio[: 2 * rate], rate


@pytest.fixture(scope="session")
def engine_cache(tmp_path_factory) -> Path:
    """One engine cache for the whole session (ONNX exports, backend choices), where workers
    spawned by the tests (which inherit the environment) keep what `auto` built and chose."""
    from engines.cache import CACHE_ENV

    path = tmp_path_factory.mktemp("engines")
    os.environ[CACHE_ENV] = str(path)
    return path


@pytest.fixture
def worker_backend() -> str:
    """The backend the supervised workers of `start_worker` ask for: plain PyTorch keeps most
    tests' boots short; a test module that overrides this fixture gets what users get ("auto":
    timed at the first start, remembered in `engine_cache` for the restarts)."""
    return "torch"


@pytest.fixture
def start_worker(demo_model_dir, worker_backend, engine_cache):
    """Factory: start a supervised worker on the demo model (CPU, `worker_backend`) with test-sized
    timeouts, wait until it is ready, return (supervisor, client). `worker=` overrides WorkerConfig
    fields, `name=` names the worker process; other keywords override SupervisorConfig fields.
    Stopped at teardown."""
    from worker.client import WorkerClient
    from worker.protocol import WorkerConfig
    from worker.supervisor import Supervisor, SupervisorConfig

    started = []

    def start(wait: bool = True, worker: dict | None = None, name: str = "cosyfast-worker", **overrides):
        worker_cfg = dict(model_dir=str(demo_model_dir), device="cpu", backend=worker_backend, heartbeat_s=0.1,
                          faults=True)
        worker_cfg.update(worker or {})
        cfg = dict(hang_timeout_s=10.0, stall_timeout_s=10.0, kill_grace_s=0.5, backoff_s=0.1, tick_s=0.02)
        cfg.update(overrides)
        supervisor = Supervisor(SupervisorConfig(worker=WorkerConfig(**worker_cfg), **cfg), name=name)
        started.append(supervisor)
        supervisor.start()
        client = WorkerClient(supervisor)
        if wait:
            assert client.wait_ready(BOOT_TIMEOUT_S), supervisor.health()
        return supervisor, client

    yield start
    for supervisor in started:
        supervisor.stop()


class Outcome:
    """Everything one request produced: events in order, the audio, and the final Done/Failed."""

    def __init__(self, events: list):
        from worker.protocol import Chunk, Progress

        self.events = events
        self.final = events[-1]
        self.chunks = [e for e in events if isinstance(e, Chunk)]
        self.pcm = np.concatenate([c.pcm for c in self.chunks]) if self.chunks else np.zeros(0, np.float32)
        self.stages = [e.stage for e in events if isinstance(e, Progress)]


@pytest.fixture
def request_for(prompt_audio):
    """request_for(text=SHORT_TEXT, **fields) -> a Synthesize with the prompt recording and
    FORCED_TOKENS speech tokens per segment."""
    from tests.envelopes import synthesize_msg

    def make(text: str = SHORT_TEXT, **fields):
        fields.setdefault("forced_tokens", FORCED_TOKENS)
        if "prompt" not in fields and "prompt_audio" not in fields:
            fields.update(prompt_audio=prompt_audio[0], prompt_sample_rate=prompt_audio[1])
        fields.setdefault("prompt_text", "a prompt")
        return synthesize_msg("", text, **fields)

    return make


@pytest.fixture
def synthesize(request_for):
    """synthesize(client, text=SHORT_TEXT, **fields) -> Outcome, once the request has ended."""

    def run(client, text: str = SHORT_TEXT, **fields) -> Outcome:
        return Outcome(list(client.submit(request_for(text, **fields))))

    return run


# A request that ran alongside others had its flow and vocoder work batched with theirs: the same
# tokens, the audio equal up to float rounding (seen: 1e-7). A resume spliced wrongly is off by 1e-2.
BATCHED_ATOL = 1e-5


def assert_same_audio(outcome: Outcome, reference: Outcome, atol: float = 0.0):
    """The request ended with Done and the chunks (and samples) of the reference run: exactly, or
    within `atol` (BATCHED_ATOL for a request that ran alongside others)."""
    from worker.protocol import Done

    assert isinstance(outcome.final, Done), outcome.final
    assert [c.seq for c in outcome.chunks] == list(range(len(outcome.chunks)))
    assert [(c.segment, c.index) for c in outcome.chunks] == [(c.segment, c.index) for c in reference.chunks]
    assert [len(c.pcm) for c in outcome.chunks] == [len(c.pcm) for c in reference.chunks]
    np.testing.assert_allclose(outcome.pcm, reference.pcm, rtol=0.0, atol=atol)


def next_heartbeats(supervisor, count: int = 2, timeout: float = 5.0) -> None:
    """Wait until `count` heartbeats of the worker have arrived after this call began (the later
    ones were sent after it began, so they report what the worker did since)."""
    for _ in range(count):
        def arrived(t0=time.monotonic()) -> bool:
            age = supervisor.health()["worker"]["heartbeat_age_s"]
            return age is not None and age < time.monotonic() - t0

        assert supervisor.wait_for(arrived, timeout), supervisor.health()


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait until the process `pid` (not necessarily our child) has ended; False on timeout. A
    pidfd becomes readable when the process exits."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def timed_answer(events: queue.SimpleQueue, timeout: float) -> list:
    """[(arrival wall-clock time, event)] of one request (a queue from `Supervisor.submit`) up to
    its Done/Failed; fails the test when that takes longer than `timeout` (a lost request)."""
    from worker.protocol import Done, Failed

    end, out = time.monotonic() + timeout, []
    while not out or not isinstance(out[-1][1], (Done, Failed)):
        try:
            event = events.get(timeout=max(0.0, end - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no answer within {timeout} s; events so far: {out}") from None
        out.append((time.time(), event))
    return out
