"""Transcription in the worker's model loop, in-process: lazy loading in the background while
synthesis goes on, answers, bad prompts, a recogniser that cannot be loaded, cancellation."""

import queue
import threading

import numpy as np
import pytest

from tests.conftest import FORCED_TOKENS, SHORT_TEXT
from tests.envelopes import synthesize_msg
from worker.gpu.faults import FaultInjector
from worker.protocol import (
    BAD_INPUT,
    CANCELLED,
    INTERNAL,
    Cancel,
    Done,
    Failed,
    Progress,
    Shutdown,
    Transcribe,
    Transcript,
)
from worker.gpu.scheduler import Scheduler
from worker.gpu.transcription import Transcriber

WAIT_S = 60.0


@pytest.fixture(scope="module")
def model(demo_model_dir):
    from cosyvoice3.pipeline import CosyVoice3

    return CosyVoice3.from_pretrained(demo_model_dir, device="cpu")


class Loader:
    """Loads the demo recogniser (or raises `error`), optionally only once `gate` is set; counts calls."""

    def __init__(self, model_dir, gate: threading.Event | None = None, error: Exception | None = None):
        self.model_dir, self.gate, self.error, self.calls = model_dir, gate, error, 0

    def __call__(self, progress):
        from asr.recognizer import Recognizer

        self.calls += 1
        progress("recognizer", 0.0, "loading the speech recogniser")
        if self.gate is not None:
            assert self.gate.wait(WAIT_S)
        if self.error is not None:
            raise self.error
        return Recognizer.from_pretrained(self.model_dir, progress=progress)


class Loop:
    """A scheduler with a transcriber, serving on a thread; `sent` collects what it sends and
    `answered(rid)` waits for that request's Done or Failed."""

    def __init__(self, model, load):
        self.sent, self._cond = [], threading.Condition()
        inbox = queue.SimpleQueue()
        self.scheduler = Scheduler(model, self._send, FaultInjector(enabled=False), inbox=inbox,
                                   transcriber=Transcriber(load, self._send, inbox.put))
        self.thread = threading.Thread(target=self.scheduler.run, daemon=True)
        self.thread.start()

    def _send(self, msg):
        with self._cond:
            self.sent.append(msg)
            self._cond.notify_all()

    def put(self, msg):
        self.scheduler.inbox.put(msg)

    def of(self, request_id):
        with self._cond:
            return [m for m in self.sent if getattr(m, "request_id", None) == request_id]

    def answered(self, request_id):
        with self._cond:
            assert self._cond.wait_for(lambda: any(isinstance(m, (Done, Failed)) for m in self.of(request_id)), WAIT_S)
        return self.of(request_id)

    def stop(self):
        self.put(Shutdown("test done"))
        self.thread.join(WAIT_S)


@pytest.fixture
def loop(model):
    loops = []

    def start(load):
        loops.append(Loop(model, load))
        return loops[-1]

    yield start
    for running in loops:
        running.stop()


def test_the_first_transcription_loads_the_recogniser_in_the_background_while_synthesis_goes_on(
        loop, demo_asr_dir, prompt_audio):
    gate = threading.Event()
    load = Loader(demo_asr_dir, gate)
    serving = loop(load)
    audio, rate = prompt_audio
    serving.put(Transcribe("t1", audio, rate))
    serving.put(synthesize_msg("s1", SHORT_TEXT, prompt_audio=audio, prompt_sample_rate=rate, prompt_text="a prompt",
                           forced_tokens=FORCED_TOKENS))
    assert isinstance(serving.answered("s1")[-1], Done)  # synthesised while the recogniser is still loading
    assert not any(isinstance(m, (Transcript, Done, Failed)) for m in serving.of("t1"))
    assert any(isinstance(m, Progress) and m.stage == "recognizer" for m in serving.of("t1"))
    gate.set()
    events = serving.answered("t1")
    transcript = next(m for m in events if isinstance(m, Transcript))
    assert isinstance(events[-1], Done) and transcript.demo and isinstance(transcript.text, str)
    assert events[-1].stats["audio_s"] > 1.0 and events[-1].stats["recognizer"]["demo"]

    serving.put(Transcribe("t2", audio, rate))
    again = serving.answered("t2")
    assert [type(m) for m in again] == [Progress, Transcript, Done]  # loaded once: no loading progress
    assert next(m for m in again if isinstance(m, Transcript)).text == transcript.text
    assert load.calls == 1


def test_a_silent_prompt_fails_with_the_sentence_synthesis_gives(loop, demo_asr_dir, model):
    serving = loop(Loader(demo_asr_dir))
    serving.put(Transcribe("quiet", np.zeros(48000, np.float32), 24000))
    failed = serving.answered("quiet")[-1]
    assert isinstance(failed, Failed) and failed.code == BAD_INPUT and "silent" in failed.message
    with pytest.raises(Exception) as synthesis:
        model.prepare_prompt(np.zeros(48000, np.float32), 24000, "")
    assert str(synthesis.value) == failed.message


def test_a_recogniser_that_cannot_load_fails_its_requests_and_the_next_one_tries_again(
        loop, demo_asr_dir, prompt_audio):
    load = Loader(demo_asr_dir, error=OSError("download failed: no route to host"))
    serving = loop(load)
    audio, rate = prompt_audio
    serving.put(Transcribe("t1", audio, rate))
    failed = serving.answered("t1")[-1]
    assert isinstance(failed, Failed) and failed.code == INTERNAL and not failed.retryable
    assert "no route to host" in failed.message and "type the transcript" in failed.message
    load.error = None
    serving.put(Transcribe("t2", audio, rate))
    assert isinstance(serving.answered("t2")[-1], Done) and load.calls == 2


def test_switched_off_recognition_answers_at_once(model, prompt_audio):
    serving = Loop(model, None)
    try:
        serving.put(Transcribe("t1", *prompt_audio))
        failed = serving.answered("t1")[-1]
        assert isinstance(failed, Failed) and "switched off" in failed.message
    finally:
        serving.stop()


def test_a_request_cancelled_while_the_recogniser_loads_gets_no_transcript(loop, demo_asr_dir, prompt_audio):
    gate = threading.Event()
    serving = loop(Loader(demo_asr_dir, gate))
    serving.put(Transcribe("t1", *prompt_audio))
    serving.put(Transcribe("t2", *prompt_audio))
    serving.put(Cancel("t1"))
    failed = serving.answered("t1")[-1]
    assert isinstance(failed, Failed) and failed.code == CANCELLED
    gate.set()
    assert isinstance(serving.answered("t2")[-1], Done)
    assert not any(isinstance(m, (Transcript, Done)) for m in serving.of("t1"))
