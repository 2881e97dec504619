"""Lent decode steps (engines.step_graphs): same tokens as the plain loop, slots reused and
returned, eager fallback when every slot is busy; on a GPU the captured graph replays exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cosyvoice3.config import load_config
from cosyvoice3.decoding.token_loop import SpeechTokenDecoder
from cosyvoice3.nn.llm import load_llm
from engines.adapters import EngineLM
from engines.step_graphs import StepGraphPool

MODEL = Path(__file__).resolve().parent / "golden" / "model"
TEXT = [324, 267, 256, 494, 454, 483, 13]
PROMPT = [151646]


def decode(lm, seed, **kw):
    dec = SpeechTokenDecoder(lm, TEXT, PROMPT, [5, 6, 7], seed=seed, **kw)
    dec.run()
    return dec


def lms(device):
    cfg = load_config(MODEL)
    lm = load_llm(MODEL / "llm.pt", cfg.llm, cfg.qwen, device=device)
    return lm, cfg.llm


@pytest.mark.parametrize("steps_per_replay", [1, 3])
def test_pool_gives_the_tokens_of_the_plain_loop_and_reuses_slots(steps_per_replay):
    lm, llm_cfg = lms("cpu")
    pool = StepGraphPool(lm, llm_cfg, sizes=(64, 256), per_size=1, use_graphs=False,
                         steps_per_replay=steps_per_replay)
    lent = EngineLM(lm, None, None, pool)
    for seed in (1, 2):
        plain = decode(lm, seed, config=llm_cfg, forced_tokens=40)
        pooled = decode(lent, seed, config=llm_cfg, forced_tokens=40)
        assert pooled.tokens == plain.tokens and len(plain.tokens) == 40
    assert [s.size for s in pool.slots] == [64] and not pool.slots[0].busy  # one slot, reused, returned


def test_busy_pool_falls_back_to_the_eager_step():
    lm, llm_cfg = lms("cpu")
    pool = StepGraphPool(lm, llm_cfg, sizes=(64,), per_size=1, use_graphs=False)
    lent = EngineLM(lm, None, None, pool)
    first = SpeechTokenDecoder(lent, TEXT, PROMPT, [5], seed=3, config=llm_cfg, forced_tokens=30)
    second = SpeechTokenDecoder(lent, TEXT, PROMPT, [5], seed=3, config=llm_cfg, forced_tokens=30)
    too_long = SpeechTokenDecoder(lent, TEXT, PROMPT, [5], seed=3, config=llm_cfg, forced_tokens=100)
    assert first._slot is not None and second._slot is None and too_long._slot is None
    assert first.run() == second.run()
    assert too_long.run()[:30] == first.tokens
    assert not pool.slots[0].busy
    abandoned = SpeechTokenDecoder(lent, TEXT, PROMPT, [5], seed=3, config=llm_cfg, forced_tokens=30)
    assert pool.slots[0].busy
    abandoned.step()
    del abandoned  # never finished: the slot comes back when the decoder is collected
    assert not pool.slots[0].busy


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_captured_step_replays_the_eager_tokens():
    lm, llm_cfg = lms("cuda")
    eager = EngineLM(lm, None, None, StepGraphPool(lm, llm_cfg, sizes=(256,), use_graphs=False))
    graphed = EngineLM(lm, None, None, StepGraphPool(lm, llm_cfg, sizes=(256,), use_graphs=True))
    for seed in (4, 5):  # the second request reuses the captured slot
        assert decode(graphed, seed, config=llm_cfg).tokens == decode(eager, seed, config=llm_cfg).tokens
