"""One LLM decode step of the full-size model, run several ways: eager, CUDA graph (with the fused
SDPA kernel or plain matmul attention), and torch.compile + CUDA graph. Random weights, bf16,
batch 1.

    python bench/llm_step_variants.py [--slots 1024] [--iters 200] [--compile-modes default]

Prints one JSON line per variant: ms per step and the time the variant took to set up.
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


@torch.no_grad()
def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--slots", type=int, default=1024)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--compile-modes", default="default", help="torch.compile modes to try (comma list, '' = none)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    with torch.device("cuda"):
        lm = CosyVoice3LM(LLMConfig(), Qwen2Config()).to(torch.bfloat16).eval()
    cache = lm.new_cache(args.slots)
    tokens = torch.tensor([17], device="cuda")
    positions = torch.tensor([args.slots // 2], device="cuda")

    def step(tok, pos):
        return lm.logprobs(lm.decode_one(tok, pos, cache))

    rows = []
    rows.append(("eager", bench(lambda: step(tokens, positions), args.iters), 0.0))
    for sdpa in (True, False):
        Attention.decode_with_sdpa = sdpa
        t = time.perf_counter()
        replay = graphed(step, (tokens, positions))
        rows.append((f"cuda_graph[{'sdpa' if sdpa else 'matmul'} attention]", bench(replay, args.iters),
                     time.perf_counter() - t))
    Attention.decode_with_sdpa = False
    for mode in args.compile_modes.split(",") if args.compile_modes else ():
        try:
            t = time.perf_counter()
            compiled = torch.compile(step, mode=mode, fullgraph=True, dynamic=False)
            replay = graphed(compiled, (tokens, positions))
            rows.append((f"compile[{mode}]+cuda_graph", bench(replay, args.iters), time.perf_counter() - t))
        except Exception as e:  # noqa: BLE001 - report and go on
            rows.append((f"compile[{mode}]+cuda_graph", None, f"{type(e).__name__}: {str(e)[:300]}"))
    for name, ms, setup in rows:
        print(json.dumps({"variant": name, "ms_per_step": None if ms is None else round(ms, 4),
                          "setup_s": setup if isinstance(setup, str) else round(setup, 1),
                          "slots": args.slots}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
