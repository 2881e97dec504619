"""Transcription through a real supervised worker process: the answer, and recovery from a crash,
a hang or an out-of-memory during recognition, as for any request; a recogniser that cannot be
loaded leaves synthesis working."""

import logging

import pytest

from tests.conftest import Outcome
from worker.protocol import INTERNAL, Done, Failed, Progress, Transcribe, Transcript


@pytest.fixture
def start_asr_worker(start_worker, demo_asr_dir):
    def start(**overrides):
        return start_worker(worker={"asr_model_dir": str(demo_asr_dir)}, **overrides)

    return start


@pytest.fixture(scope="module")
def expected_text(demo_asr_dir, prompt_audio):
    """The demo recogniser's transcript of the prompt, computed in this process."""
    from asr.prompt import transcribe_prompt
    from asr.recognizer import Recognizer

    return transcribe_prompt(Recognizer.from_pretrained(demo_asr_dir), *prompt_audio).text


def transcribe(client, prompt_audio, **fields):
    return Outcome(list(client.submit(Transcribe("", prompt_audio[0], prompt_audio[1], **fields))))


def transcript_of(outcome):
    assert isinstance(outcome.final, Done), outcome.final
    return next(e for e in outcome.events if isinstance(e, Transcript))


def test_a_prompt_is_transcribed_by_the_worker_and_out_of_memory_is_retried_in_place(
        start_asr_worker, prompt_audio, expected_text):
    supervisor, client = start_asr_worker()
    first = transcribe(client, prompt_audio)
    transcript = transcript_of(first)
    assert transcript.demo and transcript.text == expected_text
    loading = [e for e in first.events if isinstance(e, Progress) and e.stage == "recognizer"]
    assert loading and loading[-1].fraction == 1.0 and loading[0].message  # loaded on first use, with progress
    second = client.transcribe(*prompt_audio)
    assert isinstance(second, Transcript) and second.text == transcript.text

    outcome = transcribe(client, prompt_audio, fault={"kind": "oom", "step": 0})
    assert transcript_of(outcome).text == transcript.text
    assert "retrying" in outcome.stages
    assert client.health()["worker"]["restarts"] == 0


@pytest.mark.parametrize("kind, cause, timeouts", [
    ("crash", "crashed", {}),
    ("hang", "hung", {"hang_timeout_s": 1.5}),
])
def test_a_worker_that_dies_during_recognition_is_restarted_and_the_request_retried(
        start_asr_worker, prompt_audio, expected_text, caplog, kind, cause, timeouts):
    caplog.set_level(logging.WARNING, logger="worker.faults")
    supervisor, client = start_asr_worker(**timeouts)
    first_pid = client.health()["worker"]["pid"]
    outcome = transcribe(client, prompt_audio, fault={"kind": kind, "step": 0})
    assert transcript_of(outcome).text == expected_text
    assert "recovering" in outcome.stages
    assert any(kind in r.getMessage() for r in caplog.records if r.name == "worker.faults")
    health = client.health()["worker"]
    assert health["restarts"] == 1 and health["last_restart_cause"] == cause and health["pid"] != first_pid


def test_a_recogniser_that_cannot_load_leaves_synthesis_working(start_worker, synthesize, prompt_audio, tmp_path):
    supervisor, client = start_worker(worker={"asr_model_dir": str(tmp_path / "no-recogniser")})
    failed = client.transcribe(*prompt_audio)
    assert isinstance(failed, Failed) and failed.code == INTERNAL
    assert "type the transcript" in failed.message and "not found" in failed.message
    assert isinstance(synthesize(client).final, Done)
    assert client.health()["worker"]["restarts"] == 0

