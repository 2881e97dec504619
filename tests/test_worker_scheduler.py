"""The worker's model loop, in-process on the demo model: batching, resume, cancel, errors."""

import dataclasses
import threading

import numpy as np
import pytest
import torch

from tests.conftest import FORCED_TOKENS, SHORT_TEXT, TWO_SEGMENTS
from tests.envelopes import synthesize_msg
from worker.gpu.faults import FaultInjector
from worker.protocol import (
    BAD_INPUT,
    CANCELLED,
    INTERNAL,
    OOM,
    Cancel,
    Chunk,
    Done,
    Failed,
    Poisoned,
    PreparePrompt,
    Progress,
    PromptPrepared,
    Shutdown,
)
from worker.gpu.scheduler import Scheduler


@pytest.fixture(scope="module")
def model(demo_model_dir):
    from cosyvoice3.pipeline import CosyVoice3

    return CosyVoice3.from_pretrained(demo_model_dir, device="cpu")


@pytest.fixture(scope="module")
def prompt(model, prompt_audio):
    return model.prepare_prompt(prompt_audio[0], prompt_audio[1], "a prompt")


def synth(request_id, prompt, text=SHORT_TEXT, **fields):
    return synthesize_msg(request_id, text, prompt=prompt, forced_tokens=FORCED_TOKENS, **fields)


def serve(model, messages, answers: int, rows: int = 8, faults: bool = False, during=None):
    """Run a scheduler on `messages` until `answers` Done/Failed (or a Poisoned) were sent; returns
    (sent messages, scheduler). `during(msg, scheduler)` sees each message as it is sent."""
    sent, finished = [], []
    scheduler = None

    def send(msg):
        sent.append(msg)
        if during:
            during(msg, scheduler)
        if isinstance(msg, (Done, Failed)):
            finished.append(msg)
        if len(finished) == answers:
            scheduler.inbox.put(Shutdown("test done"))

    scheduler = Scheduler(model, send, FaultInjector(enabled=faults), rows=rows)
    for msg in messages:
        scheduler.inbox.put(msg)
    thread = threading.Thread(target=scheduler.run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "scheduler did not finish"
    return sent, scheduler


def chunks_of(sent, request_id):
    return [m for m in sent if isinstance(m, Chunk) and m.request_id == request_id]


def test_concurrent_requests_decode_in_one_batch_and_each_gets_its_own_audio(model, prompt):
    alone = {rid: chunks_of(serve(model, [synth(rid, prompt, seed=s)], answers=1)[0], rid)
             for rid, s in (("a", 1), ("b", 2))}
    sent, scheduler = serve(model, [synth("a", prompt, seed=1), synth("b", prompt, seed=2)], answers=2)
    first_done = next(i for i, m in enumerate(sent) if isinstance(m, Done))
    assert {m.request_id for m in sent[:first_done] if isinstance(m, Chunk)} == {"a", "b"}
    assert scheduler.batch["max"] == 2  # both advanced in the same decode steps
    for rid in ("a", "b"):
        got = chunks_of(sent, rid)
        assert [m.seq for m in got] == list(range(len(got))) == list(range(len(alone[rid])))
        for x, y in zip(got, alone[rid]):
            np.testing.assert_allclose(x.pcm, y.pcm, atol=1e-5, rtol=0)  # batched = alone
    assert scheduler.busy == () and scheduler.steps > 0


def test_requests_wait_for_a_row_and_never_fail_for_lack_of_one(model, prompt):
    sent, scheduler = serve(model, [synth(r, prompt) for r in "abc"], answers=3, rows=1)
    assert [m.request_id for m in sent if isinstance(m, Done)] == ["a", "b", "c"]
    assert scheduler.batch["max"] == 1


def test_resumed_request_sends_exactly_the_undelivered_chunks(model, prompt):
    full, _ = serve(model, [synth("full", prompt, TWO_SEGMENTS, seed=5)], answers=1)
    full_chunks = chunks_of(full, "full")
    first_of_seg1 = next(i for i, c in enumerate(full_chunks) if c.segment == 1)
    delivered = first_of_seg1 + 1  # all of segment 0 and the first chunk of segment 1
    resumed, _ = serve(model, [synth("r", prompt, TWO_SEGMENTS, seed=5, start_segment=1, skip_chunks=1,
                                          first_seq=delivered)], answers=1)
    tail = chunks_of(resumed, "r")
    assert len(tail) == len(full_chunks) - delivered
    for got, want in zip(tail, full_chunks[delivered:]):
        assert (got.seq, got.segment, got.index) == (want.seq, want.segment, want.index)
        np.testing.assert_array_equal(got.pcm, want.pcm)


def test_cancel_stops_the_request_at_once(model, prompt):
    def cancel_after_first_chunk(msg, scheduler):
        if isinstance(msg, Chunk) and msg.request_id == "long" and msg.seq == 0:
            scheduler.inbox.put(Cancel("long"))

    sent, scheduler = serve(model, [synth("long", prompt, TWO_SEGMENTS)], answers=1,
                            during=cancel_after_first_chunk)
    assert isinstance(sent[-1], Failed) and sent[-1].code == CANCELLED
    assert len(chunks_of(sent, "long")) <= 2  # the chunk that triggered the cancel, maybe one in the same step
    assert scheduler.busy == ()


def test_request_errors_fail_only_that_request(model, prompt):
    sent, _ = serve(model, [synth("bad", prompt, "   "), synth("good", prompt)],
                    answers=2)
    answers = {m.request_id: m for m in sent if isinstance(m, (Done, Failed))}
    assert isinstance(answers["bad"], Failed) and answers["bad"].code == BAD_INPUT and not answers["bad"].retryable
    assert isinstance(answers["good"], Done)


def test_non_finite_audio_fails_the_request(model, prompt):
    """A vocoder backend that returns NaN (a broken engine) fails the request, not the worker."""
    from cosyvoice3.backends import Backends
    from cosyvoice3.pipeline import CosyVoice3

    nan_model = CosyVoice3(model.parts, Backends(vocoder=lambda mel, spec: torch.full_like(spec, float("nan"))))
    sent, scheduler = serve(nan_model, [synth("nan", prompt)], answers=1)
    assert isinstance(sent[-1], Failed) and sent[-1].code == INTERNAL and "non-finite" in sent[-1].message
    assert not chunks_of(sent, "nan") and scheduler.poisoned is None


def test_first_oom_is_recovered_in_process_second_in_a_row_poisons(model, prompt):
    oom = {"kind": "oom", "step": 2}
    # oom2 joins while ok's flow solve goes on step by step (ok has the only row until it decoded
    # its last token); its fault comes after the ten ODE steps of that solve: ok completes first
    late = {"kind": "oom", "step": 2 + 2 * model.config.flow.cfm.n_timesteps}
    sent, scheduler = serve(model, [synth("oom1", prompt, fault=oom),
                                    synth("ok", prompt, stream=False),
                                    synth("oom2", prompt, fault=late),
                                    synth("oom3", prompt, fault=late)],
                            answers=4, rows=1, faults=True)
    answers = [m for m in sent if isinstance(m, (Done, Failed, Poisoned))]
    assert [(type(m).__name__, getattr(m, "request_id", None)) for m in answers] == [
        ("Failed", "oom1"), ("Done", "ok"), ("Failed", "oom2"), ("Poisoned", None)]
    assert answers[0].code == OOM and answers[0].retryable
    assert answers[-1].cause == "oom" and scheduler.poisoned == "oom"


def test_cuda_error_poisons_the_process(model, prompt):
    sent, scheduler = serve(model, [synth("x", prompt, fault={"kind": "cuda_error", "step": 1})],
                            answers=1, faults=True)
    assert isinstance(sent[-1], Poisoned) and sent[-1].cause == "cuda_error" and scheduler.poisoned == "cuda_error"
    assert "illegal memory access" in sent[-1].message


def test_faults_are_ignored_unless_enabled(model, prompt):
    sent, scheduler = serve(model, [synth("x", prompt, fault={"kind": "cuda_error", "step": 1})],
                            answers=1, faults=False)
    assert isinstance(sent[-1], Done) and scheduler.poisoned is None


def test_prepare_prompt_answers_features_then_done(model, prompt_audio):
    audio, rate = prompt_audio
    sent, _ = serve(model, [PreparePrompt("p", audio, rate, "a prompt"), PreparePrompt("short", audio[:100], rate)],
                    answers=2)
    by_id = {}
    for m in sent:
        if not isinstance(m, Progress):
            by_id.setdefault(m.request_id, []).append(m)
    assert [type(m) for m in by_id["p"]] == [PromptPrepared, Done]
    assert len(by_id["p"][0].prompt.speech_tokens) > 0 and by_id["p"][0].prompt.text == "a prompt"
    assert isinstance(by_id["short"][0], Failed) and by_id["short"][0].code == BAD_INPUT


def test_the_spec_built_by_the_page_arrives_unchanged_in_the_model(model, prompt):
    """The page maps its inputs once into a SpeechSpec and checks it; the spec crosses a real pipe
    inside the envelope and is the job's spec in the model, equal field for field (the prompt's
    transcript travels once, in the spec)."""
    from cosyvoice3.modes import Limits
    from tests.envelopes import SPEC_DEFAULTS, through_a_pipe
    from webui.handlers import GENERATE_INPUTS, GenerateForm
    from webui.synthesis import Synthesis

    values = dict(SPEC_DEFAULTS, text="  Hello there. ", mode="instruct", prompt_text=" a prompt ", seed=12345, speed=1.25,
                  stream=False, prompt_audio=None, voice=None, preset="cantonese", custom_instruction="",
                  takes=1, session=None, run_id="")
    synthesis = Synthesis(None, None, Limits())
    spec = synthesis.check(GenerateForm.of([values[name] for name in GENERATE_INPUTS]).spec)
    assert (spec.text, spec.prompt_text, spec.seed, spec.speed, spec.stream) == ("Hello there.", "a prompt", 12345,
                                                                                 1.25, False)
    msg = through_a_pipe(synthesis.message(spec, prompt))
    assert msg.spec == spec and msg.prompt.text == ""
    seen = []

    def during(sent, scheduler):
        seen.extend(job.spec for job in scheduler.engine.jobs if job.request_id == msg.request_id)

    sent, _ = serve(model, [dataclasses.replace(msg, forced_tokens=FORCED_TOKENS)], answers=1, during=during)
    assert isinstance(sent[-1], Done) and sent[-1].stats["mode"] == "instruct"
    assert seen and all(s == spec for s in seen)


def test_a_long_text_is_read_between_rounds_while_a_short_request_runs(demo_model_dir, prompt, monkeypatch):
    from cosyvoice3.modes import Limits
    from cosyvoice3.pipeline import CosyVoice3
    from worker.gpu import scheduler as scheduler_module

    monkeypatch.setattr(scheduler_module, "PLAN_SLICE_S", 0.0)  # one block of text per loop turn
    model = CosyVoice3.from_pretrained(demo_model_dir, device="cpu", limits=Limits(max_text_chars=50_000))
    chapter = " ".join(["It is 3:30 pm on 12 May 2025, and the river is calm."] * 900)[:50_000]
    seen = {}

    def during(msg, scheduler):
        if isinstance(msg, Done) and msg.request_id == "short":
            long = scheduler._active["long"]
            seen["long still being read"] = long.plan is not None and long.job is None
            seen["blocks read"] = long.plan[2].progress if long.plan else None
            scheduler.inbox.put(Cancel("long"))

    sent, _ = serve(model, [synth("long", prompt, text=chapter), synth("short", prompt)], answers=2, during=during)
    assert seen["long still being read"], seen
    read, blocks = seen["blocks read"]
    assert 0 < read < blocks, seen
    reading = [m.fraction for m in sent if isinstance(m, Progress) and m.request_id == "long" and m.stage == "reading"]
    assert reading and reading == sorted(reading) and 0 < reading[0] and reading[-1] <= read / blocks, reading
    assert chunks_of(sent, "short") and not chunks_of(sent, "long")
    final = {m.request_id: m for m in sent if isinstance(m, (Done, Failed))}
    assert isinstance(final["short"], Done) and final["long"].code == CANCELLED
