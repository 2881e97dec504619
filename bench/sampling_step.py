"""The RAS sampling step alone (issue 19, item 2): the top-25 candidates found by a top-k
(`top_candidates`, today's path) against its plain twin, a stable sort of the whole speech
vocabulary (`sorted_candidates`), each captured in a CUDA graph on the GPU (eager on the CPU);
on the GPU also the whole token choice as one Triton kernel (engines/sampling_triton.py, what
`--llm-kernels triton` runs: ban, greedy, RAS and the state update) against `choose`, its twin.

    python bench/sampling_step.py [--device cuda] [--batches 1,64] [--iters 500]

Prints one JSON line per (batch, candidates): microseconds per sampling step, and whether the two
drew the same tokens on the same inputs. Random log-probabilities over the model's 6761 outputs.
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

from cosyvoice3.decoding.sampling import empty_recent, ras_sample, sorted_candidates, top_candidates  # noqa: E402

VOCAB = 6761


def timed(fn, iters: int, device: str) -> float:
    """Microseconds per call of fn (a CUDA graph replay on the GPU)."""
    if device == "cuda":
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        run = graph.replay
        for _ in range(10):
            run()
        torch.cuda.synchronize()
    else:
        run = fn
        run()
    start = time.perf_counter()
    for _ in range(iters):
        run()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--iters", type=int, default=500)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    for batch in [int(b) for b in args.batches.split(",")]:
        logp = (torch.randn(batch, VOCAB, generator=generator) * 4).log_softmax(-1).to(args.device)
        recent = empty_recent(batch, 10, args.device)
        key = torch.arange(batch, device=args.device, dtype=torch.long) * 7919
        counter = torch.zeros(batch, device=args.device, dtype=torch.long)
        tokens = {}
        for name, candidates in (("top_candidates", top_candidates), ("sorted_candidates", sorted_candidates)):
            out = {}

            def step():
                out["tokens"] = ras_sample(logp, recent, key, counter, candidates=candidates)

            us = timed(step, args.iters, args.device)
            tokens[name] = out["tokens"].clone()
            print(json.dumps({"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                              "batch": batch, "candidates": name, "us_per_step": round(us, 1)}), flush=True)
        print(json.dumps({"batch": batch, "same_tokens": bool(torch.equal(tokens["top_candidates"],
                                                                          tokens["sorted_candidates"]))}), flush=True)
        if args.device == "cuda":
            choice_step(logp, key, args)


def choice_step(logp: torch.Tensor, key: torch.Tensor, args) -> None:
    """The token choice with its state update: `choose` (today's) and the one-kernel
    `choose_tokens`, each in a CUDA graph on a state of its own; then whether they agree."""
    from cosyvoice3.config import SamplingConfig
    from cosyvoice3.decoding.token_batch import DecodeState, choose
    from engines.sampling_triton import choose_tokens

    batch, sampling = logp.shape[0], SamplingConfig()
    chosen = {}
    for name, fn in (("choose", lambda s: choose(logp.log_softmax(-1), s, 0, batch, sampling)),
                     ("choose_tokens_kernel", lambda s: choose_tokens(logp, s, 0, batch, sampling))):
        state = DecodeState.allocate(batch, VOCAB, sampling.win_size, args.device)
        state.key.copy_(key)
        us = timed(lambda: fn(state), args.iters, args.device)
        state = DecodeState.allocate(batch, VOCAB, sampling.win_size, args.device)
        state.key.copy_(key)
        chosen[name] = torch.stack([fn(state) for _ in range(20)])  # 20 steps from a fresh state
        print(json.dumps({"batch": batch, "candidates": name, "us_per_step": round(us, 1)}), flush=True)
    print(json.dumps({"batch": batch, "same_choices_20_steps": bool(torch.equal(chosen["choose"],
                                                                              chosen["choose_tokens_kernel"]))}),
          flush=True)


if __name__ == "__main__":
    main()
