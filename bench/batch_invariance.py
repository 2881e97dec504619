"""Same seed, same tokens, whatever else runs: each segment decoded alone and then in one batch
with the others, on the model as the worker serves it (engines, CUDA graphs, half precision).
Prints one JSON line: the share of identical tokens (position by position), how many segments
are identical throughout, and where the first difference comes on average. In FP32 on the CPU
the tokens are identical (tests/test_token_batch.py); in BF16 on a GPU the batched matrix
products round differently, so a sampled token can flip and the rest of that segment follows
another path.

    python bench/batch_invariance.py --model-dir D [--device cuda] [--dtype bf16] [--segments 16]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosyvoice3.decoding.token_batch import SegmentSpec, TokenBatch, decode_alone  # noqa: E402
from engines import load_model  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def specs(n: int, tokens: int, seed: int, eop: int, speech_vocab: int) -> list[SegmentSpec]:
    """n zero-shot-shaped segments: random text ids (prompt text ending in <|endofprompt|>, tts
    text) and random prompt speech tokens."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = [rng.randrange(1000, 30000) for _ in range(rng.randrange(10, 40))] + [eop]
        text = [rng.randrange(1000, 30000) for _ in range(rng.randrange(10, 40))]
        speech = [rng.randrange(0, speech_vocab) for _ in range(rng.randrange(50, 150))]
        out.append(SegmentSpec(prompt, text, speech, key=rng.getrandbits(63), forced_tokens=tokens))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bf16", choices=DTYPES)
    p.add_argument("--backend", default="auto")
    p.add_argument("--segments", type=int, default=16)
    p.add_argument("--tokens", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    model = load_model(args.model_dir, device=args.device, dtype=DTYPES[args.dtype], backend=args.backend)
    steps, lm, cfg = model.backends.decode_steps, model.llm, model.config.llm
    segs = specs(args.segments, args.tokens, args.seed, model.tokenizer.token_to_id("<|endofprompt|>"),
                 lm.speech_token_size)
    t0 = time.perf_counter()
    alone = [decode_alone(lm, cfg, s, steps=steps)[0].tokens for s in segs]
    alone_s = time.perf_counter() - t0
    max_len = max(TokenBatch.prompt_length(s) for s in segs) + args.tokens + 8
    batch = TokenBatch(lm, cfg, rows=len(segs), max_len=max_len, steps=steps)
    got = {i: [] for i in range(len(segs))}
    t0 = time.perf_counter()
    events = batch.join(list(enumerate(segs)))
    while True:
        for ev in events:
            got[ev.owner] += ev.emitted
        if not batch.active:
            break
        events = batch.step()
    batched_s = time.perf_counter() - t0
    same_positions = sum(sum(a == b for a, b in zip(alone[i], got[i])) for i in got)
    total = sum(len(a) for a in alone)
    firsts = [next((k for k, (a, b) in enumerate(zip(alone[i], got[i])) if a != b), None) for i in got]
    diverged = [k for k in firsts if k is not None]
    print(json.dumps({
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "dtype": args.dtype,
        "backends": {k: v.get("backend") for k, v in model.backends.report.items()},
        "segments": len(segs), "tokens": args.tokens,
        "identical_token_share": round(same_positions / max(1, total), 4),
        "identical_segments": sum(1 for i in got if alone[i] == got[i]),
        "first_difference_mean": round(sum(diverged) / len(diverged), 1) if diverged else None,
        "first_difference_min": min(diverged) if diverged else None,
        "alone_s": round(alone_s, 2), "batched_s": round(batched_s, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
