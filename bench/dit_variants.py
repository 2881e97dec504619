"""One DiT estimator call (the flow's cost) at serving shapes: eager vs torch.compile, and what
the arithmetic would allow. Prints one JSON line per (variant, rows, frames).

    python bench/dit_variants.py --model-dir D [--dtype fp16] [--shapes 2x206,32x256,64x512,128x650]
        [--compile]

rows = 2 x requests (CFG pairs), frames = prompt + chunk mel frames. `tflops` is the linear layers'
arithmetic (2 * parameters of the blocks * rows * frames) over the measured time: against the
GPU's matrix rate it shows how far a call is from being arithmetic-bound.
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

from cosyvoice3.config import load_config  # noqa: E402
from cosyvoice3.nn.dit import chunk_attention_mask  # noqa: E402
from cosyvoice3.nn.flow import load_flow  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def timed(fn, runs: int = 5) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


@torch.inference_mode()
def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--dtype", default="fp16", choices=DTYPES)
    p.add_argument("--shapes", default="2x206,32x256,64x512,128x650")
    p.add_argument("--compile", action="store_true")
    args = p.parse_args(argv)
    cfg = load_config(args.model_dir)
    flow = load_flow(Path(args.model_dir) / "flow.pt", cfg.flow, "cuda", DTYPES[args.dtype])
    dit = flow.estimator
    block_params = sum(p.numel() for b in dit.transformer_blocks for n, p in b.named_parameters()
                       if "attn_norm" not in n)
    variants = [("eager", dit)]
    if args.compile:
        variants.append(("compiled", torch.compile(dit, dynamic=True)))
    for name, fn in variants:
        for shape in args.shapes.split(","):
            rows, frames = map(int, shape.split("x"))
            g = torch.Generator(device="cuda").manual_seed(0)
            dt = DTYPES[args.dtype]
            x, mu, cond = (torch.randn(rows, 80, frames, device="cuda", generator=g, dtype=dt) for _ in range(3))
            mask = torch.ones(rows, 1, frames, device="cuda", dtype=dt)
            spks = torch.randn(rows, 80, device="cuda", generator=g, dtype=dt)
            t = torch.rand(rows, device="cuda", generator=g, dtype=dt)
            chunk = torch.full((rows,), 50, device="cuda", dtype=torch.long)
            am = chunk_attention_mask(mask, chunk)
            t0 = time.perf_counter()
            fn(x, mask, mu, t, spks, cond, attn_mask=am)
            torch.cuda.synchronize()
            first = time.perf_counter() - t0
            s = timed(lambda: fn(x, mask, mu, t, spks, cond, attn_mask=am))
            print(json.dumps({"variant": name, "rows": rows, "frames": frames, "ms": round(1000 * s, 2),
                              "first_call_s": round(first, 2),
                              "tflops": round(2 * block_params * rows * frames / s / 1e12, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
