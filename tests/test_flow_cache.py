"""The streaming flow's exact chunk cache against its plain twin (every frame re-solved).

FP32 on the CPU: the cached path gives the audio of the recompute path within 1e-4 for short and
long prompts, several segments, requests batched together or joining mid-stream, a voice's prompt
frames reused by a later request, a tiny budget (eviction / fall-back), an out-of-memory inside a
cached solve; the DiT's `forward_cached` equals `forward` with the streaming mask.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosyvoice3.config import DiTConfig
from cosyvoice3.spec import SpeechSpec
from cosyvoice3.nn.dit import DiT, attention_mask
from cosyvoice3.synthesis.job import SynthesisJob
from cosyvoice3.synthesis.limits import PolicyLimits
from cosyvoice3.synthesis.policy import Policy
from cosyvoice3.synthesis.request import SynthesisRequest
from tests.conftest import SHORT_TEXT

ATOL = 1e-4
TWO_SEGMENTS = "The first sentence is here. And a second sentence follows it, somewhat longer than the first."


@pytest.fixture(scope="module")
def model(demo_model_dir):
    from cosyvoice3.pipeline import CosyVoice3

    return CosyVoice3.from_pretrained(demo_model_dir, device="cpu")


@pytest.fixture(scope="module")
def prompts(model, prompt_audio):
    audio, sr = prompt_audio
    short = model.prepare_prompt(audio[: int(3.0 * sr)], sr, "a prompt")
    long = model.prepare_prompt(np.tile(audio, 1 + int(10 * sr) // len(audio))[: int(10.0 * sr)], sr, "a long prompt")
    return {"3s": short, "10s": long}


def run(model, requests, budget, joins=None, hook=None):
    """Drain requests through one engine; joins: {index: round} when a request is added. Returns
    the audio of each (concatenated), the chunk shape, and the engine."""
    engine = model.engine(rows=4, max_len=1024, flow_cache_bytes=budget, hook=hook)
    jobs = [SynthesisJob(model, r) for r in requests]
    joins = joins or {}
    pcm = {job: [] for job in jobs}
    policy = Policy()
    for round_ in range(4000):
        for i, job in enumerate(jobs):
            if joins.get(i, 0) == round_:
                engine.add(job)
        if all(job.done for job in jobs) and round_ >= max(joins.values(), default=0):
            break
        out = policy.run_once(engine)
        assert not out.failed, out.failed
        for job, chunk in out.chunks:
            pcm[job].append(chunk)
        for job in jobs:
            if job.done and job in engine.jobs:
                engine.remove(job)
    assert all(job.done for job in jobs)
    return [pcm[j] for j in jobs], engine


def same_audio(got, want):
    assert [(c.segment, c.index, c.segment_final) for c in got] == [(c.segment, c.index, c.segment_final)
                                                                    for c in want]
    for a, b in zip(got, want):
        assert a.pcm.shape == b.pcm.shape
        if len(a.pcm):
            np.testing.assert_allclose(a.pcm, b.pcm, rtol=0, atol=ATOL)


def req(prompt, tokens, seed=1, text=SHORT_TEXT, stream=True):
    return SynthesisRequest(SpeechSpec(text, prompt_text=prompt.text, seed=seed, stream=stream), prompt,
                            forced_tokens=tokens)


def test_forward_cached_equals_the_streaming_forward():
    torch.manual_seed(0)
    cfg = DiTConfig(dim=64, depth=2, heads=4, dim_head=16, ff_mult=2)
    dit = DiT(cfg).eval()
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.2)
    b, t = 2, 250
    x, mu, cond = (torch.randn(b, 80, t) for _ in range(3))
    tt, spks = torch.rand(b), torch.randn(b, 80)
    with torch.no_grad():
        want = dit(x, torch.ones(b, 1, t), mu, tt, spks, cond, attn_mask=attention_mask(torch.ones(b, 1, t), True, 50))
        depth, heads, dh, k = dit.cache_shape()
        kv, conv, start, got = torch.zeros(depth, 2, b, heads, 0, dh), torch.zeros(b, 2, cfg.dim, k), 0, []
        for end in (100, 150, 250):
            part = slice(start, end)
            v, new_kv, conv_in = dit.forward_cached(x[..., part], torch.ones(b, 1, end - start), mu[..., part], tt,
                                                    spks, cond[..., part], torch.full((b,), start), kv, conv)
            got.append(v)
            kv = torch.cat([kv, new_kv], dim=4)
            conv = torch.cat([conv, conv_in], dim=3)[..., -k:]
            start = end
    torch.testing.assert_close(torch.cat(got, dim=2), want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("length", ["3s", "10s"])
def test_cached_streaming_gives_the_recompute_audio(model, prompts, length):
    requests = [req(prompts[length], 160, seed=3), req(prompts[length], 90, seed=4, text=TWO_SEGMENTS)]
    want, _ = run(model, requests, budget=0)
    got, engine = run(model, requests, budget=1 << 30)
    for g, w in zip(got, want):
        same_audio(g, w)
    report = engine.flow_cache.report()
    assert report["cached_works"] >= 4 and report["recomputed_works"] == 0
    assert report["used_mb"] > 0  # the voice's prompt frames stay for the next request
    assert not engine._stateful  # every segment's own state was freed


def test_a_request_joining_mid_stream_and_the_voice_entry(model, prompts):
    p = prompts["10s"]
    requests = [req(p, 200, seed=5), req(p, 120, seed=6), req(prompts["3s"], 100, seed=7)]
    joins = {0: 0, 1: 40, 2: 75}
    want, _ = run(model, requests, budget=0, joins=joins)
    got, engine = run(model, requests, budget=1 << 30, joins=joins)
    for g, w in zip(got, want):
        same_audio(g, w)
    report = engine.flow_cache.report()
    assert report["hits"] >= 1 and report["misses"] == 2  # the second request of the 10 s voice found it
    assert report["voices"] == 2


def test_a_tiny_budget_falls_back_to_the_same_audio(model, prompts):
    requests = [req(prompts["10s"], 160, seed=8), req(prompts["3s"], 160, seed=9)]
    want, _ = run(model, requests, budget=0)
    probe = model.engine(rows=1, max_len=64, flow_cache_bytes=1)
    frame = probe.flow_geometry.frame_bytes
    got, engine = run(model, requests, budget=260 * frame)  # room for some states, not all
    for g, w in zip(got, want):
        same_audio(g, w)
    report = engine.flow_cache.report()
    assert report["recomputed_works"] >= 1 and report["cached_works"] >= 1
    assert engine.flow_cache.used <= engine.flow_cache.budget


def test_out_of_memory_in_a_cached_solve_drops_the_caches_and_recovers(model, prompts):
    requests = [req(prompts["3s"], 160, seed=10), req(prompts["10s"], 160, seed=11)]
    want, _ = run(model, requests, budget=0)
    engine = model.engine(rows=4, max_len=1024, flow_cache_bytes=1 << 30)
    real = engine.chunk_estimator
    calls = {"n": 0}

    class FailsOnce:
        dtype = real.dtype

        def cache_shape(self):
            return real.cache_shape()

        def past_buffer(self, rows, past):
            return real.past_buffer(rows, past)

        def __call__(self, *args):
            calls["n"] += 1
            if calls["n"] == 25:  # inside a later chunk's solve
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return real(*args)

    engine.chunk_estimator = FailsOnce()
    jobs = [SynthesisJob(model, r) for r in requests]
    for job in jobs:
        engine.add(job)
    pcm = {job: [] for job in jobs}
    policy = Policy()
    while not all(job.done for job in jobs):
        out = policy.run_once(engine)
        assert not out.failed
        for job, chunk in out.chunks:
            pcm[job].append(chunk)
    for job, w in zip(jobs, want):
        same_audio(pcm[job], w)
    report = engine.flow_cache.report()
    assert calls["n"] > 25 or report["dropped"] >= 1
    assert report["dropped"] >= 1 and report["recomputed_works"] >= 0


def test_cancel_frees_the_state(model, prompts):
    engine = model.engine(rows=2, max_len=1024, flow_cache_bytes=1 << 30)
    job = SynthesisJob(model, req(prompts["3s"], 300, seed=12))
    engine.add(job)
    policy = Policy()
    while not engine._stateful:
        policy.run_once(engine)
    held = engine.flow_cache.used
    engine.cancel(job)
    assert not engine._stateful and engine.flow_cache.used < held


def _until(engine, policy, condition, limit=2000):
    for _ in range(limit):
        if condition():
            return
        out = policy.run_once(engine)
        assert not out.failed, out.failed
    raise AssertionError("the condition never came")


def test_flow_steps_go_on_between_the_decode_steps_of_a_waiting_request(model, prompts):
    # while a request's flow solve is in flight, a new request's decode steps are not held up: the
    # solve advances one ODE step per round and the newcomer gets a token in each of those rounds;
    # both get the audio they get alone
    alone = [run(model, [r], budget=1 << 30)[0][0] for r in (req(prompts["3s"], 120, seed=20),
                                                               req(prompts["10s"], 90, seed=21))]
    engine = model.engine(rows=4, max_len=1024, flow_cache_bytes=1 << 30)
    first, second = SynthesisJob(model, req(prompts["3s"], 120, seed=20)), SynthesisJob(model, req(prompts["10s"], 90, seed=21))
    pcm = {first: [], second: []}
    policy = Policy()
    engine.add(first)
    _until(engine, policy, lambda: first.decoding is not None and len(first.decoding.tokens) >= 12)
    engine.add(second)  # it waits for its first chunk's tokens when the first one's solve starts
    _until(engine, policy, lambda: engine.solving)
    steps = model.config.flow.cfm.n_timesteps
    rounds, tokens_seen = 0, []
    while engine.solving and rounds < 4 * steps:
        out = policy.run_once(engine)
        for job, chunk in out.chunks:
            pcm[job].append(chunk)
        seg = second.decoding
        tokens_seen.append(len(seg.tokens) if seg is not None else None)
        rounds += 1
    assert rounds >= steps - 1  # one step per round, not the whole solve in one
    counts = [n for n in tokens_seen if n is not None]
    assert len(counts) >= steps - 2 and all(b == a + 1 for a, b in zip(counts, counts[1:]))
    while not (first.done and second.done):
        out = policy.run_once(engine)
        assert not out.failed, out.failed
        for job, chunk in out.chunks:
            pcm[job].append(chunk)
    for job, want in zip((first, second), alone):
        same_audio(pcm[job], want)


def test_a_request_cancelled_while_its_solve_is_in_flight_holds_no_cache(model, prompts):
    engine = model.engine(rows=4, max_len=1024, flow_cache_bytes=1 << 30)
    doomed, other = SynthesisJob(model, req(prompts["3s"], 200, seed=22)), SynthesisJob(model, req(prompts["10s"], 60, seed=23))
    policy = Policy(PolicyLimits(audio_slack_s=1e9))  # every work as soon as it is ready, whatever the clock
    engine.add(doomed)
    _until(engine, policy, lambda: doomed.decoding is not None)
    seg = doomed.decoding

    def near_its_second_chunk():
        sched = seg.schedule
        return sched.chunks_done == 1 and sched.ready(len(seg.tokens) + 8)

    _until(engine, policy, near_its_second_chunk)  # a state held, more chunks to come
    engine.add(other)  # it waits for its tokens when the next solve starts: that one goes step by step
    _until(engine, policy, lambda: doomed.pending and engine.in_flight(doomed.pending[0]))
    engine.cancel(doomed)
    _until(engine, policy, lambda: other.done)
    engine.remove(other)
    assert not engine.solving and not engine._stateful
    assert engine.flow_cache.used == sum(v.nbytes for v in engine.flow_cache.voices.values())


def test_a_workers_health_reports_its_flow_cache(start_worker, synthesize):
    from tests.conftest import next_heartbeats
    from worker.protocol import Done

    supervisor, client = start_worker(worker={"policy": PolicyLimits(flow_cache_mb=256)})
    first = synthesize(client, stream=True, forced_tokens=120, seed=1)
    again = synthesize(client, stream=True, forced_tokens=120, seed=1)
    assert isinstance(first.final, Done) and isinstance(again.final, Done)
    np.testing.assert_allclose(again.pcm, first.pcm, rtol=0, atol=ATOL)  # the second found the voice cached
    next_heartbeats(supervisor)
    cache = client.health()["worker"]["batch"]["flow_cache"]
    assert cache["budget_mb"] == 256.0 and cache["voices"] == 1 and cache["used_mb"] > 0
    assert cache["hits"] >= 1 and cache["misses"] >= 1 and cache["cached_works"] >= 2 and 0 < cache["hit_rate"] < 1
