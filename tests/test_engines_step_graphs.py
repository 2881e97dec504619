"""The batched decode step in CUDA graphs (engines.step_graphs): buckets, and on a GPU the same
tokens as the eager step, alone and in a batch that grows and shrinks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cosyvoice3.config import load_config
from cosyvoice3.decoding.token_batch import SegmentSpec, TokenBatch
from cosyvoice3.nn.llm import load_llm
from engines.step_graphs import row_buckets, slot_buckets

MODEL = Path(__file__).resolve().parent / "golden" / "model"
TEXT = [324, 267, 256, 494, 454, 483, 13]
PROMPT = [151646]


def test_buckets_cover_every_size_up_to_the_batch():
    assert row_buckets(64) == [1, 2, 4, 8, 16, 32, 64] and row_buckets(6) == [1, 2, 4, 6] and row_buckets(1) == [1]
    sizes = slot_buckets(2048)
    assert sizes[0] == 64 and sizes[-1] == 2048 and sizes == sorted(set(sizes))
    assert slot_buckets(100) == [64, 100]


def run(batch, arrivals):
    got = {}
    step = 0
    while step < len(arrivals) or batch.active:
        items = arrivals[step] if step < len(arrivals) else []
        events = batch.join(items) if items else []
        events += batch.step() if batch.active else []
        for ev in events:
            got.setdefault(ev.owner, []).extend(ev.emitted)
        step += 1
    return got


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_steps_give_the_eager_tokens_in_a_changing_batch():
    from engines.step_graphs import GraphDecodeSteps

    cfg = load_config(MODEL)
    lm = load_llm(MODEL / "llm.pt", cfg.llm, cfg.qwen, device="cuda")
    specs = {f"r{i}": SegmentSpec(PROMPT, TEXT, [5, 6, 7][: i % 4], key=i, forced_tokens=20 + 9 * i) for i in range(6)}
    arrivals = [[("r0", specs["r0"])], [], [(n, specs[n]) for n in ("r1", "r2", "r3")], [], [],
                [(n, specs[n]) for n in ("r4", "r5")]]
    eager = run(TokenBatch(lm, cfg.llm, rows=8, max_len=512, initial_rows=2), arrivals)
    steps = GraphDecodeSteps(lm)
    graphed_batch = TokenBatch(lm, cfg.llm, rows=8, max_len=512, steps=steps, initial_rows=2)
    graphed_batch.warm()
    graphed = run(graphed_batch, arrivals)
    assert graphed == eager and len(steps.graphs) > 0
