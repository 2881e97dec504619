"""One LLM decode step of the full-size model, run several ways: eager, CUDA graph (with the fused
SDPA kernel or plain matmul attention), torch.compile + CUDA graph, and the fused step of
engines/llm_fused.py in a CUDA graph (its PyTorch twins, and its Triton kernels). Random weights,
bf16, at each batch size of --batches.

    python bench/llm_step_variants.py [--slots 1024] [--batches 1,64] [--iters 200] [--compile-modes default]
                                      [--profile]

Prints one JSON line per variant and batch: ms per step and the time the variant took to set up;
with --profile also the kernels of one step (torch.profiler over the replays: name, launches and
microseconds per step, the top 15 by time), the table the step's design is decided from.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosyvoice3.config import LLMConfig, Qwen2Config  # noqa: E402
from cosyvoice3.nn.llm import CosyVoice3LM  # noqa: E402
from cosyvoice3.nn.qwen2 import Attention  # noqa: E402
from engines.llm_fused import fused_decoder  # noqa: E402


def bench(fn, iters: int) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t) / iters


def graphed(step, args):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step(*args)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        step(*args)
    return g.replay


def kernel_table(replay, iters: int) -> list[dict]:
    """The GPU kernels of `iters` replays, per step: name, launches, microseconds (top 15)."""
    from torch.profiler import ProfilerActivity, profile

    replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            replay()
        torch.cuda.synchronize()
    rows = [{"kernel": e.key[:90], "launches": round(e.count / iters, 1),
             "us": round(getattr(e, "device_time_total", getattr(e, "cuda_time_total", 0.0)) / iters, 2)}
            for e in prof.key_averages()]
    rows = [r for r in rows if r["us"] > 0]
    total = {"kernel": "(all)", "launches": round(sum(r["launches"] for r in rows), 1),
             "us": round(sum(r["us"] for r in rows), 1)}
    return [total] + sorted(rows, key=lambda r: -r["us"])[:15]


@torch.no_grad()
def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--slots", type=int, default=1024)
    p.add_argument("--batches", default="1", help="rows of the step (comma list)")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--compile-modes", default="default", help="torch.compile modes to try (comma list, '' = none)")
    p.add_argument("--profile", action="store_true", help="also print the kernels of each graphed variant")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    with torch.device("cuda"):
        lm = CosyVoice3LM(LLMConfig(), Qwen2Config()).to(torch.bfloat16).eval()
    for batch in [int(b) for b in args.batches.split(",")]:
        cache = lm.new_cache(args.slots, batch=batch)
        tokens = torch.full((batch,), 17, device="cuda")
        positions = torch.full((batch,), args.slots // 2, device="cuda")
        rows = run_variants(lm, cache, tokens, positions, args)
        for name, ms, setup, kernels in rows:
            print(json.dumps({"variant": name, "batch": batch, "ms_per_step": None if ms is None else round(ms, 4),
                              "setup_s": setup if isinstance(setup, str) else round(setup, 1),
                              "slots": args.slots, "position": args.slots // 2,
                              **({"kernels": kernels} if kernels else {})}), flush=True)
    return 0


def run_variants(lm, cache, tokens, positions, args) -> list[tuple]:
    """(name, ms per step, setup seconds or the error, kernel table or None) per variant."""
    def step(tok, pos):
        return lm.logprobs(lm.decode_one(tok, pos, cache))

    def timed(name, replay, setup):
        return (name, bench(replay, args.iters), setup, kernel_table(replay, 20) if args.profile else None)

    rows = [("eager", bench(lambda: step(tokens, positions), args.iters), 0.0, None)]
    for sdpa in (True, False):
        Attention.decode_with_sdpa = sdpa
        t = time.perf_counter()
        replay = graphed(step, (tokens, positions))
        rows.append(timed(f"cuda_graph[{'sdpa' if sdpa else 'matmul'} attention]", replay, time.perf_counter() - t))
    Attention.decode_with_sdpa = False
    for mode in args.compile_modes.split(",") if args.compile_modes else ():
        try:
            t = time.perf_counter()
            compiled = torch.compile(step, mode=mode, fullgraph=True, dynamic=False)
            replay = graphed(compiled, (tokens, positions))
            rows.append(timed(f"compile[{mode}]+cuda_graph", replay, time.perf_counter() - t))
        except Exception as e:  # noqa: BLE001 - report and go on
            rows.append((f"compile[{mode}]+cuda_graph", None, f"{type(e).__name__}: {str(e)[:300]}", None))
    for kernels in ("twins", "triton"):  # the fused weights are views of the module's: no copy
        try:
            t = time.perf_counter()
            fused = fused_decoder(lm, kernels)
            replay = graphed(lambda tok, pos: fused.logprobs(fused.decode_one(tok, pos, cache)), (tokens, positions))
            rows.append(timed(f"fused[{kernels}]+cuda_graph", replay, time.perf_counter() - t))
        except Exception as e:  # noqa: BLE001 - report and go on
            rows.append((f"fused[{kernels}]+cuda_graph", None, f"{type(e).__name__}: {str(e)[:300]}", None))
    return rows


if __name__ == "__main__":
    sys.exit(main())
