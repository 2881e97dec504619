"""The DiT estimator as serving runs it (CUDA graphs below the graph size, torch.compile above,
padded like the graphs) on a sequence of serving shapes it was not warmed on: the time of each
shape's first and second call against eager. A first call far slower than the second means the
shape compiled (or built kernels) while a request waited. Prints one JSON line per shape.

    python bench/compile_shapes.py --model-dir D [--dtype bf16] [--shapes 16x320,64x700,...]
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

from engines import load_model  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SHAPES = "16x320,32x333,64x700,128x650,8x1100,24x500,96x900,2x2100,48x1300"


def timed_call(fn) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t


@torch.inference_mode()
def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--dtype", default="bf16", choices=DTYPES)
    p.add_argument("--shapes", default=SHAPES)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    model = load_model(args.model_dir, device="cuda", dtype=DTYPES[args.dtype], backend="auto")
    print(json.dumps({"event": "loaded", "load_s": round(time.perf_counter() - t0, 1),
                      "dit": model.backends.report.get("dit")}), flush=True)
    serving = model.backends.estimator
    eager = model.parts.flow.estimator
    for shape in args.shapes.split(","):
        rows, frames = (int(v) for v in shape.split("x"))
        g = torch.Generator(device="cuda").manual_seed(rows * frames)
        x, mu, cond = (torch.randn(rows, 80, frames, device="cuda", generator=g) for _ in range(3))
        mask = torch.ones(rows, 1, frames, device="cuda")
        t = torch.rand(rows, device="cuda", generator=g)
        spks = torch.randn(rows, 80, device="cuda", generator=g)
        chunk = torch.full((rows,), 50, device="cuda", dtype=torch.int64)
        dtype = next(eager.parameters()).dtype

        def run_serving():
            return serving(x, mask, mu, t, spks, cond, chunk)

        def run_eager():
            from cosyvoice3.nn.dit import chunk_attention_mask

            return eager(*(v.to(dtype) for v in (x, mask, mu, t, spks, cond)),
                         attn_mask=chunk_attention_mask(mask.to(dtype), chunk))

        first = timed_call(run_serving)
        second = min(timed_call(run_serving) for _ in range(3))
        eager_s = min(timed_call(run_eager) for _ in range(3))
        print(json.dumps({"rows": rows, "frames": frames, "first_ms": round(1000 * first, 2),
                          "serving_ms": round(1000 * second, 2), "eager_ms": round(1000 * eager_s, 2),
                          "speedup": round(eager_s / second, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
