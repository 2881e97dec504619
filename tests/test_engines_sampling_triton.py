"""The one-kernel token choice (engines/sampling_triton.py) against its twin, `choose` on the
log-softmax (cosyvoice3/decoding/token_batch.py): the same tokens and the same state after every
step, through the nucleus draw, the repetition fallback, greedy rows, banned stop ids and ties.
Without a GPU the kernel runs in Triton's interpreter (tests/conftest.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cosyvoice3.config import SamplingConfig
from cosyvoice3.decoding.token_batch import DecodeState, choose

sampling_triton = pytest.importorskip("engines.sampling_triton", reason="Triton is a test dependency")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
VOCAB, STOP = 6761, 6561
SAMPLING = SamplingConfig()


def states(rows: int, seed: int = 0) -> tuple[DecodeState, DecodeState]:
    """Two equal decode states: keys, counters, bans, greedy rows and RAS windows of their own."""
    g = torch.Generator().manual_seed(seed)
    state = DecodeState.allocate(rows, VOCAB, SAMPLING.win_size, DEVICE)
    state.key[:] = torch.randint(0, 2**62, (rows,), generator=g).to(DEVICE)
    state.count[:] = torch.randint(0, 40, (rows,), generator=g).to(DEVICE)
    state.ban_until[:] = torch.randint(0, 40, (rows,), generator=g).to(DEVICE)
    state.ban[:, STOP:] = True
    state.greedy[:] = (torch.arange(rows) % 5 == 4).to(DEVICE)
    state.recent[:] = torch.randint(0, 60, (rows, SAMPLING.win_size), generator=g).to(DEVICE)
    twin = DecodeState(*(getattr(state, name).clone() for name in DecodeState.FIELDS))
    return state, twin


def step_both(logits, kernel_state, twin_state, start=0, stop=None, sampling=SAMPLING):
    stop = logits.shape[0] + start if stop is None else stop
    want = choose(logits.log_softmax(dim=-1), twin_state, start, stop, sampling)
    got = sampling_triton.choose_tokens(logits, kernel_state, start, stop, sampling)
    assert got.tolist() == want.tolist()
    for name in DecodeState.FIELDS:
        assert torch.equal(getattr(kernel_state, name), getattr(twin_state, name)), name
    return got


def test_the_same_tokens_and_state_as_the_twin_step_after_step():
    rows = 8
    kernel_state, twin_state = states(rows)
    g = torch.Generator().manual_seed(1)
    for _ in range(12):
        logits = torch.randn(rows, VOCAB, generator=g) * 3
        logits[:, :60] += 4  # the window's ids are likely: draws repeat, the fallback draws
        logits[:, STOP:] += 6  # stop ids likely where they are not banned
        step_both(logits.to(DEVICE), kernel_state, twin_state)


def test_a_repeated_favourite_falls_back_and_banned_ids_stay_out():
    rows = 4
    kernel_state, twin_state = states(rows, seed=2)
    for state in (kernel_state, twin_state):
        state.recent[:, -1] = 7  # the favourite was just said
        state.greedy[:] = False
        state.count[:], state.ban_until[:] = 0, 10  # too short to stop
    logits = torch.full((rows, VOCAB), -5.0)
    logits[:, 7] = 30.0  # the nucleus draw is 7, again
    logits[:, STOP:] = 29.0  # the next best are stop ids: banned
    got = step_both(logits.to(DEVICE), kernel_state, twin_state)
    assert all(token != 7 and token < STOP for token in got.tolist())


def test_ties_are_ordered_as_a_stable_sort_orders_them():
    """Whole blocks of equal logits: the candidates at the top-k edge are the lowest ids."""
    rows = 6
    kernel_state, twin_state = states(rows, seed=3)
    for state in (kernel_state, twin_state):
        state.greedy[:] = torch.tensor([False] * 5 + [True], device=DEVICE)
    logits = torch.zeros(rows, VOCAB)
    logits[:, 100:140] = 2.0  # 40 equal leaders for 25 places
    logits[1, 3000:3010] = 2.5
    logits[2] = 1.0  # all equal
    for _ in range(4):
        step_both(logits.to(DEVICE), kernel_state, twin_state)


def test_rows_of_a_slice_and_other_settings():
    """A slice of the batch (rows 2..5 of 7) is chosen and only its state moves; top-k 5, window 4."""
    sampling = dataclasses.replace(SAMPLING, top_k=5, win_size=4, top_p=0.5)
    kernel_state, twin_state = states(7, seed=4)
    logits = (torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(5)) * 2).to(DEVICE)
    step_both(logits, kernel_state, twin_state, start=2, stop=5, sampling=sampling)


def test_a_top_k_above_the_tile_is_refused():
    kernel_state, _ = states(2)
    with pytest.raises(ValueError, match="top_k <= 32"):
        sampling_triton.choose_tokens(torch.zeros(2, VOCAB, device=DEVICE), kernel_state, 0, 2,
                                      dataclasses.replace(SAMPLING, top_k=40))
