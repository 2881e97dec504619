"""The streaming flow with and without its chunk cache, in one process (no worker): cost and parity.

    python bench/flow_stream.py --model-dir D [--device cuda] [--dtype bf16] [--tokens 250] [--runs 3]

For one request of `--tokens` forced speech tokens (250 = 10 s) on the prompt of the golden set,
through a one-row engine: the flow and vocoder seconds (the engine's stage clocks, median of
`--runs`) offline, streamed with the flow cache (the voice's prompt frames already cached, as for
a saved voice), streamed with a cold cache (first use of the voice), and streamed without the
cache (every chunk re-solves its earlier frames: the path before the cache); the first-chunk
time of each; the largest difference between the cached and the uncached audio. On CUDA also the
graph-replayed cached DiT call against its eager twin (relative error, random inputs). JSON lines.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import engines  # noqa: E402
from cosyvoice3.spec import SpeechSpec  # noqa: E402
from cosyvoice3.synthesis.job import SynthesisJob  # noqa: E402
from cosyvoice3.synthesis.policy import Policy  # noqa: E402
from cosyvoice3.synthesis.request import SynthesisRequest  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TEXT = "Benchmarking the streaming flow of one request with and without its chunk cache."


def run_once(model, prompt, tokens: int, stream: bool, budget: int | None, engine=None, n: int = 1):
    """`n` requests at once (different seeds) through one engine; the pcm is the first one's."""
    engine = engine or model.engine(rows=max(1, n), max_len=4096, flow_cache_bytes=budget)
    before = dict(engine.stage_s)
    jobs = [SynthesisJob(model, SynthesisRequest(SpeechSpec(TEXT, prompt_text=prompt.text, seed=1 + i, stream=stream),
                                                 prompt, forced_tokens=tokens)) for i in range(n)]
    for job in jobs:
        engine.add(job)
    policy, pcm, first = Policy(), [], None
    t0 = time.perf_counter()
    while not all(job.done for job in jobs):
        out = policy.run_once(engine)
        assert not out.failed, out.failed
        for job, chunk in out.chunks:
            if len(chunk.pcm) and first is None:
                first = time.perf_counter() - t0
            if job is jobs[0]:
                pcm.append(chunk.pcm)
    for job in jobs:
        engine.remove(job)
    stages = {k: engine.stage_s[k] - before[k] for k in before}
    return {"flow_s": stages["flow"], "vocoder_s": stages["vocoder"], "first_chunk_s": first,
            "wall_s": time.perf_counter() - t0}, np.concatenate(pcm), engine


def median_of(runs: list[dict]) -> dict:
    return {k: round(statistics.median(r[k] for r in runs), 4) for k in runs[0]}


def graph_parity(model) -> dict | None:
    est = model.backends.chunk_estimator
    if est is None or not hasattr(est, "graphs"):
        return None
    dit = est.dit
    depth, heads, dh, ctx = dit.cache_shape()
    out = {}
    for rows, new, past in ((2, 100, 300), (4, 150, 700), (2, 200, 0)):
        g = torch.Generator(device=est.device).manual_seed(rows * 1000 + new)
        rnd = lambda *s: torch.randn(*s, generator=g, device=est.device)  # noqa: E731
        args = (rnd(rows, 80, new), torch.ones(rows, 1, new, device=est.device), rnd(rows, 80, new),
                torch.rand(rows, generator=g, device=est.device), rnd(rows, 80), rnd(rows, 80, new),
                torch.full((rows,), past, device=est.device, dtype=torch.long),
                0.5 * rnd(depth, 2, rows, heads, past, dh), 0.5 * rnd(rows, 2, dit.cfg.dim, ctx))
        with torch.inference_mode():
            want = dit.forward_cached(*(a.to(est.dtype) if a.is_floating_point() else a for a in args))
            got = est(*args)
        err = max(float((a.float() - b.float()).norm() / b.float().norm()) for a, b in zip(got, want))
        out[f"{rows}x{new}+{past}"] = round(err, 6)
    return out


# the parts of the flow and the vocoder a profile names: (owner attribute path, label)
# (the solves are step generators: their time is the run's flow_s and the DiT calls inside them)
PARTS = (("flow.prepare", "flow.prepare"), ("backends.chunk_estimator", "dit.cached_call"),
         ("backends.estimator", "dit.full_call"), ("hift.vocode", "vocoder"), ("hift.predict_f0", "vocoder.f0"),
         ("hift.m_source.windows", "vocoder.source"), ("hift.source_spectra", "vocoder.stft"),
         ("backends.vocoder", "vocoder.conv_stack"), ("hift.istft_rows", "vocoder.istft"))


def _labelled(fn, label: str):
    def call(*a, **k):
        with torch.profiler.record_function(label):
            return fn(*a, **k)
    return call


def profile_runs(model, prompt, tokens: int, many: int) -> dict:
    """One offline and one warm cached streamed run under the profiler (the labels wrap the
    model's own objects for this run only)."""
    from torch.profiler import ProfilerActivity, profile
    undo = []
    for path, label in PARTS:
        *owner_path, name = path.split(".")
        owner = model
        for part in owner_path:
            owner = getattr(owner, part)
        fn = getattr(owner, name, None)
        if fn is None:
            continue
        if isinstance(fn, torch.nn.Module):
            undo.append((fn, "forward", None))
            fn.forward = _labelled(fn.forward, label)
            continue
        undo.append((owner, name, fn))
        setattr(owner, name, _labelled(fn, label))
    out = {}
    try:
        engine = model.engine(rows=1, max_len=4096, flow_cache_bytes=4 << 30)
        wide = model.engine(rows=many, max_len=4096, flow_cache_bytes=8 << 30)
        for _ in range(2):
            run_once(model, prompt, tokens, True, None, engine=engine)
            run_once(model, prompt, tokens, False, 0)
            run_once(model, prompt, tokens, True, None, engine=wide, n=many)
        for name, stream, budget, eng, n in (("offline", False, 0, None, 1), ("stream_cached", True, None, engine, 1),
                                             (f"stream_cached_x{many}", True, None, wide, many)):
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if model.device.type == "cuda" else [])
            with profile(activities=acts) as prof:
                r = run_once(model, prompt, tokens, stream, budget, engine=eng, n=n)[0]
            events = prof.key_averages()
            parts = {}
            for e in events:
                if e.key in {label for _, label in PARTS}:
                    parts[e.key] = {"calls": e.count, "host_ms": round(e.cpu_time_total / 1e3, 2),
                                    "device_ms": round(e.device_time_total / 1e3, 2)}
            kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
            kernels.sort(key=lambda e: -e.self_device_time_total)
            out[name] = {"run": r, "parts": parts, "kernel_launches": sum(e.count for e in kernels),
                         "kernel_ms": round(sum(e.self_device_time_total for e in kernels) / 1e3, 2),
                         "top": [(e.key[:70], e.count, round(e.self_device_time_total / 1e3, 2)) for e in kernels[:14]]}
    finally:
        for owner, name, fn in reversed(undo):
            if fn is None:
                delattr(owner, name)  # the module's own forward again
            else:
                setattr(owner, name, fn)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=DTYPES, default="bf16")
    p.add_argument("--backend", default="auto")
    p.add_argument("--tokens", type=int, default=250)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--profile", action="store_true", help="also profile one offline and one streamed run")
    p.add_argument("--profile-only", action="store_true", help="only the profile")
    p.add_argument("--many", type=int, default=16, help="requests at once in the profile's batched run")
    args = p.parse_args(argv)
    t = time.perf_counter()
    model = engines.load_model(args.model_dir, device=args.device, dtype=DTYPES[args.dtype], backend=args.backend)
    print(json.dumps({"event": "loaded", "s": round(time.perf_counter() - t, 1),
                      "flow_chunks": model.backends.report.get("flow_chunks", {}).get("detail"),
                      "flow": model.backends.report.get("flow", {}).get("detail")}), flush=True)
    parity = graph_parity(model)
    if parity is not None:
        print(json.dumps({"event": "graph_parity", "relative_error": parity}), flush=True)
    audio, sr = sf.read(ROOT / "tests" / "golden" / "prompt_24k.wav", dtype="float32")
    prompt = model.prepare_prompt(audio, sr, "a prompt transcript for the benchmark")
    n_prompt = len(prompt.speech_tokens)
    if args.profile or args.profile_only:
        for name, r in profile_runs(model, prompt, args.tokens, args.many).items():
            print(json.dumps({"event": "profile", "name": name, **r}), flush=True)
        if args.profile_only:
            return 0
    results, pcm = {}, {}
    warm = model.engine(rows=1, max_len=4096, flow_cache_bytes=4 << 30)
    for name, stream, budget in (("offline", False, 0), ("stream_recompute", True, 0)):
        runs = [run_once(model, prompt, args.tokens, stream, budget)[0] for _ in range(args.runs + 1)][1:]
        results[name] = median_of(runs)
        pcm[name] = run_once(model, prompt, args.tokens, stream, budget)[1]
    cold = []
    for _ in range(args.runs):  # a fresh cache each time: the voice's first request
        r, pcm["stream_cached_cold"], _ = run_once(model, prompt, args.tokens, True, 4 << 30)
        cold.append(r)
    results["stream_cached_cold"] = median_of(cold)
    run_once(model, prompt, args.tokens, True, None, engine=warm)
    warm_runs = [run_once(model, prompt, args.tokens, True, None, engine=warm)[0] for _ in range(args.runs)]
    results["stream_cached"] = median_of(warm_runs)
    pcm["stream_cached"] = run_once(model, prompt, args.tokens, True, None, engine=warm)[1]
    offline = results["offline"]["flow_s"] + results["offline"]["vocoder_s"]
    for name, r in results.items():
        r["flow_vocoder_s"] = round(r["flow_s"] + r["vocoder_s"], 4)
        r["over_offline"] = round(r["flow_vocoder_s"] / offline, 3)
        print(json.dumps({"event": "run", "name": name, "tokens": args.tokens, "prompt_tokens": n_prompt, **r}),
              flush=True)
    ref = pcm["stream_recompute"]
    diff = {k: float(np.abs(v - ref).max()) if v.shape == ref.shape else f"shape {v.shape} vs {ref.shape}"
            for k, v in pcm.items() if k.startswith("stream_cached")}
    print(json.dumps({"event": "cached_vs_recompute_max_abs", **diff, "cache": warm.flow_cache.report(),
                      "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2)
                      if args.device.startswith("cuda") else None}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
