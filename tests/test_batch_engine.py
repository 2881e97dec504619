"""The batch engine and its policy on the demo model: many requests in one engine give the audio
they give alone; a first chunk is not held back by other requests' later chunks; a request that
runs out of memory in a batched stage fails alone and the others go on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosyvoice3.spec import SpeechSpec
from cosyvoice3.synthesis.job import SynthesisJob
from cosyvoice3.synthesis.limits import PolicyLimits
from cosyvoice3.synthesis.policy import Policy
from cosyvoice3.synthesis.request import SynthesisRequest
from tests.conftest import SHORT_TEXT


@pytest.fixture(scope="module")
def model(demo_model_dir):
    from cosyvoice3.pipeline import CosyVoice3

    return CosyVoice3.from_pretrained(demo_model_dir, device="cpu")


@pytest.fixture(scope="module")
def prompt(model, prompt_audio):
    return model.prepare_prompt(prompt_audio[0], prompt_audio[1], "a prompt")


def request(prompt, tokens: int, seed: int, stream: bool = True) -> SynthesisRequest:
    return SynthesisRequest(SpeechSpec(SHORT_TEXT, prompt_text=prompt.text, seed=seed, stream=stream), prompt,
                            forced_tokens=tokens)


def drain(engine, policy, jobs, max_rounds: int = 2000):
    """Rounds until every job is done; returns {job: [chunks]}, the round of each job's first
    audio, and the first round each job was seen with its first chunk work waiting at a round's
    start."""
    chunks = {job: [] for job in jobs}
    first_round, work_round = {}, {}
    for round_ in range(max_rounds):
        if all(job.done for job in jobs):
            break
        for job in jobs:
            if job.pending and job.pending[0].first and job not in work_round:
                work_round[job] = round_
        out = policy.run_once(engine)
        assert not out.failed, out.failed
        for job, chunk in out.chunks:
            chunks[job].append(chunk)
            if len(chunk.pcm):
                first_round.setdefault(job, round_)
        for job in jobs:
            if job.done and job in engine.jobs:
                engine.remove(job)
    assert all(job.done for job in jobs)
    return chunks, first_round, work_round


@pytest.mark.parametrize("decode_steps", [1, 4])
def test_requests_in_one_engine_get_the_audio_they_get_alone(model, prompt, decode_steps):
    """Also with four decode steps per round, read back once (`PolicyLimits.decode_steps`)."""
    specs = [(30, 1, True), (55, 2, True), (20, 3, False), (41, 4, True)]
    alone = []
    for tokens, seed, stream in specs:
        job = SynthesisJob(model, request(prompt, tokens, seed, stream))
        engine = model.engine(rows=1, max_len=1024)
        engine.add(job)
        alone.append(drain(engine, Policy(), [job])[0][job])
    engine = model.engine(rows=4, max_len=1024)
    jobs = [SynthesisJob(model, request(prompt, *spec)) for spec in specs]
    for job in jobs[:2]:
        engine.add(job)
    policy = Policy(PolicyLimits(decode_steps=decode_steps))
    for _ in range(5):  # the others join a batch already decoding
        policy.run_once(engine)
    for job in jobs[2:]:
        engine.add(job)
    together, _, _ = drain(engine, policy, jobs)
    assert engine.batch_stats.max >= 3
    for job, solo in zip(jobs, alone):
        got = together[job]
        assert [(c.segment, c.index, c.segment_final) for c in got] == [(c.segment, c.index, c.segment_final)
                                                                         for c in solo]
        for a, b in zip(got, solo):
            np.testing.assert_allclose(a.pcm, b.pcm, atol=1e-5, rtol=0)


def test_a_new_requests_first_chunk_is_made_in_the_round_its_tokens_are_ready(model, prompt):
    """Fairness: a long request streaming for a while does not delay a short one's first chunk:
    the first chunk is due at once, the long one's later chunks only when its listener needs them."""
    engine = model.engine(rows=2, max_len=1024)
    policy = Policy(PolicyLimits(max_audio_works=1))  # one chunk per round: the policy must choose
    long = SynthesisJob(model, request(prompt, 500, 1))
    engine.add(long)
    rounds = 0
    while long.first_audio_at is None:
        policy.run_once(engine)
        rounds += 1
    short = SynthesisJob(model, request(prompt, 50, 2))
    engine.add(short)
    _, first_round, work_round = drain(engine, policy, [long, short])
    # its first work was made in the round it appeared (never seen waiting at a round's start), or
    # in the round after it was first seen waiting: never later
    assert short in first_round
    assert first_round[short] - work_round.get(short, first_round[short]) <= 1


def test_several_decode_steps_a_round_but_one_while_a_request_waits_and_none_past_a_first_chunk(model, prompt):
    """`decode_steps` 8: a round decodes 8 steps while nothing waits; one while a segment waits for
    a row; never more than a streaming request still needs for its first chunk, which is made in
    the round its tokens are there."""
    engine = model.engine(rows=1, max_len=1024)
    policy = Policy(PolicyLimits(decode_steps=8))
    offline = SynthesisJob(model, request(prompt, 200, 1, stream=False))
    engine.add(offline)
    policy.run_once(engine)  # joins
    assert policy.plan_decode(engine) == 8
    before = len(offline.decoding.tokens)
    policy.run_once(engine)
    assert len(offline.decoding.tokens) == before + 8
    waiting = SynthesisJob(model, request(prompt, 40, 2))
    engine.add(waiting)  # no free row: it waits
    assert engine.joinable() and policy.plan_decode(engine) == 1
    engine.cancel(offline)
    policy.run_once(engine)  # it joins
    seg = waiting.decoding
    need = engine.tokens_to_first_chunk()
    assert len(need) == 1 and need[0] % 8 != 0  # 8-step rounds would pass the first chunk's last token
    target = len(seg.tokens) + need[0]
    while waiting.first_audio_at is None:
        assert policy.plan_decode(engine) == min(8, engine.tokens_to_first_chunk()[0])
        policy.run_once(engine)
    assert len(seg.tokens) == target  # its first chunk came in the round its last token was decoded


def test_a_free_row_goes_to_the_request_whose_audio_is_due_first(model, prompt):
    """Every row taken by a long text: when its next segment and a new request both wait for the
    row, the new one (due on arrival) takes it while the long one still has audio to play; the
    long one goes first once its audio has run dry before the new one arrived; both finish."""
    import time

    from tests.conftest import TWO_SEGMENTS

    for long_runs_dry in (False, True):
        engine = model.engine(rows=1, max_len=1024)
        policy = Policy()
        long = SynthesisJob(model, SynthesisRequest(SpeechSpec(TWO_SEGMENTS, prompt_text=prompt.text, seed=1),
                                                    prompt, forced_tokens=30))
        engine.add(long)
        while long.joining is None or long.next_index < 2:  # its second segment waits for the row
            policy.run_once(engine)
        new = SynthesisJob(model, request(prompt, 30, 2))
        engine.add(new)
        assert long.first_audio_at is not None and long.audio_sent_s > 0
        # the long one's audio plays out after the new one arrived, or before it did
        long.first_audio_at = new.arrived - long.audio_sent_s + (-1.0 if long_runs_dry else 5.0)
        assert policy.plan_join(engine) == [long.joining if long_runs_dry else new.joining]
        chunks, _, _ = drain(engine, policy, [long, new])
        assert all(chunks[job][-1].segment_final for job in (long, new))


def test_cancelling_one_request_frees_its_row_and_the_others_finish(model, prompt):
    engine = model.engine(rows=3, max_len=1024)
    jobs = [SynthesisJob(model, request(prompt, 40 + 10 * i, i)) for i in range(3)]
    for job in jobs:
        engine.add(job)
    policy = Policy()
    for _ in range(6):
        policy.run_once(engine)
    assert engine.decoding == 3
    engine.cancel(jobs[1])
    assert engine.decoding == 2 and jobs[1] not in engine.jobs
    chunks, _, _ = drain(engine, policy, [jobs[0], jobs[2]])
    for job in (jobs[0], jobs[2]):
        assert chunks[job][-1].segment_final and sum(len(c.pcm) for c in chunks[job]) > 0


def test_out_of_memory_in_a_batched_step_fails_only_the_request_that_does_not_fit(model, prompt):
    """The decode step of a batch runs out of memory for one request (injected at the engine's
    hook): the step is retried on halves of the batch, the request fails alone with the error,
    and the others decode on with the tokens they would have had."""
    alone = {}
    for seed in (1, 2, 3):
        job = SynthesisJob(model, request(prompt, 40, seed, stream=False))
        engine = model.engine(rows=1, max_len=1024)
        engine.add(job)
        alone[seed] = drain(engine, Policy(), [job])[0][job]
    jobs = {seed: SynthesisJob(model, request(prompt, 40, seed, stream=False)) for seed in (1, 2, 3)}
    calls = {"n": 0}

    def hook(job, stage):
        if job is jobs[2] and stage == "decode":
            calls["n"] += 1
            if calls["n"] >= 5:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")

    engine = model.engine(rows=3, max_len=1024, hook=hook)
    for job in jobs.values():
        engine.add(job)
    policy = Policy()
    failed, chunks = [], {job: [] for job in jobs.values()}
    while not all(job.done for job in jobs.values()):
        out = policy.run_once(engine)
        failed += out.failed
        for job, chunk in out.chunks:
            chunks[job].append(chunk)
        for job in jobs.values():
            if job.done and job in engine.jobs:
                engine.remove(job)
    assert [(j, type(e).__name__) for j, e in failed] == [(jobs[2], "OutOfMemoryError")] and jobs[2].failed
    for seed in (1, 3):
        np.testing.assert_allclose(np.concatenate([c.pcm for c in chunks[jobs[seed]]]),
                                   np.concatenate([c.pcm for c in alone[seed]]), atol=1e-5, rtol=0)
