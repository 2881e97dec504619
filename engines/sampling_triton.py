"""The choice of the next token as one Triton kernel: `choose_tokens(logits, state, start, stop,
sampling)` is `cosyvoice3.decoding.token_batch.choose(logits.log_softmax(-1), ...)` - its twin and
test oracle - in one launch instead of about a hundred small ones.

One program per row, the whole speech vocabulary in one tile: log-softmax of the logits, the ban
of the row's stop ids while it is too short, the probabilities; greedy rows take the first
maximum; the others draw by repetition-aware sampling (cosyvoice3/decoding/sampling.py): the top-k
candidates picked one at a time (largest probability, lowest id among equals: the stable
descending sort), the top-p cut on their running sum, the draw by exponential race on the row's
counter-based uniforms (the same 32-bit hash, here in 64-bit integers masked to 32 bits), the
window check, and the fallback draw over the whole vocabulary. Then the row's state moves on as
`choose` moves it: token, the RAS window, the counter.

The tokens equal the twin's up to float rounding (a sum or a logarithm rounded differently can
only change a draw that sat on a tie). Triton's interpreter runs it on the CPU for the tests.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from cosyvoice3.decoding.sampling import _GOLDEN, FALLBACK_DRAW, MASK32, NUCLEUS_DRAW

CANDIDATES_PAD = 32  # the top-k candidates' tile (k <= 32)
_MASK = tl.constexpr(MASK32)  # the hash's constants, as the kernels can read them
_GOLDEN_C = tl.constexpr(_GOLDEN)


@triton.jit
def _mix32(x):
    """sampling.mix32 on uint64 values below 2^32."""
    mask = tl.full([], _MASK, tl.uint64)
    x = x ^ (x >> 16)
    x = (x * tl.full([], 0x7FEB352D, tl.uint64)) & mask
    x = x ^ (x >> 15)
    x = (x * tl.full([], 0x846CA68B, tl.uint64)) & mask
    return x ^ (x >> 16)


@triton.jit
def _row_stream(key, counter, draw_salt):
    """sampling.row_stream: key, counter int64 scalars; draw_salt = (draw * golden) mod 2^32."""
    mask = tl.full([], _MASK, tl.uint64)
    k = key.to(tl.uint64)
    h = _mix32((k >> 32) & mask)
    h = _mix32((k & mask) ^ h)
    h = _mix32(((counter.to(tl.uint64) & mask) + h) & mask)
    return _mix32(h ^ draw_salt.to(tl.uint64))


@triton.jit
def _uniform(stream, index):
    """sampling.counter_uniform's entry `index` (int64 tensor) of a stream: float32 in (0, 1)."""
    mask = tl.full([], _MASK, tl.uint64)
    golden = tl.full([], _GOLDEN_C, tl.uint64)
    bits = _mix32((stream + (((index + 1).to(tl.uint64) * golden) & mask)) & mask)
    bits = _mix32(bits ^ stream)
    return ((bits >> 8).to(tl.float32) + 0.5) * (1.0 / 16777216.0)


@triton.jit
def _choose_kernel(logits_ptr, ban_ptr, ban_until_ptr, count_ptr, key_ptr, greedy_ptr, recent_ptr, token_ptr,
                   out_ptr, vocab, logits_row, ban_row, recent_row, top_p, repeat_limit, nucleus_salt, fallback_salt,
                   TOP_K: tl.constexpr, K_PAD: tl.constexpr, WINDOW: tl.constexpr, WINDOW_PAD: tl.constexpr,
                   WIN_SIZE: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    ids = tl.arange(0, BLOCK)
    inside = ids < vocab
    x = tl.load(logits_ptr + row * logits_row + ids, mask=inside, other=float("-inf")).to(tl.float32)
    top = tl.max(x, axis=0)
    logp = x - (top + tl.log(tl.sum(tl.exp(x - top), axis=0)))  # log_softmax
    count = tl.load(count_ptr + row)
    banned = tl.load(ban_ptr + row * ban_row + ids, mask=inside, other=0) != 0
    banned = banned & (count < tl.load(ban_until_ptr + row))
    logp = tl.where(banned | ~inside, float("-inf"), logp)
    best = tl.max(logp, axis=0)
    weights = tl.exp(logp - best)
    probs = weights / tl.sum(weights, axis=0)

    # the top-k candidates in the order of a stable descending sort
    slots = tl.arange(0, K_PAD)
    cand_p = tl.zeros([K_PAD], tl.float32)
    cand_id = tl.zeros([K_PAD], tl.int32)
    before = tl.zeros([K_PAD], tl.float32)  # probability of the candidates ahead (a running sum)
    running = 0.0
    work = tl.where(inside, probs, -2.0)
    for i in tl.static_range(TOP_K):
        p_i, id_i = tl.max(work, axis=0, return_indices=True, return_indices_tie_break_left=True)
        cand_p = tl.where(slots == i, p_i, cand_p)
        cand_id = tl.where(slots == i, id_i, cand_id)
        before = tl.where(slots == i, running, before)
        running = running + p_i
        work = tl.where(ids == id_i, -1.0, work)
    kept = tl.where((slots < TOP_K) & (before < top_p), cand_p, 0.0)

    key = tl.load(key_ptr + row)
    nucleus = _row_stream(key, count, nucleus_salt)
    race = -tl.log(_uniform(nucleus, slots.to(tl.int64)))
    score = tl.where(slots < TOP_K, kept / race, -1.0)
    pick = tl.argmax(score, axis=0, tie_break_left=True)
    first = tl.sum(tl.where(slots == pick, cand_id, 0), axis=0)

    places = tl.arange(0, WINDOW_PAD)
    in_window = places < WINDOW
    recent = tl.load(recent_ptr + row * recent_row + places, mask=in_window, other=-1)
    repeats = tl.sum((in_window & (places >= WINDOW - WIN_SIZE) & (recent == first)).to(tl.int32), axis=0)

    fallback = _row_stream(key, count, fallback_salt)
    rest = tl.where(ids == first, 0.0, probs)
    fallback_race = -tl.log(_uniform(fallback, ids.to(tl.int64)))
    second = tl.argmax(tl.where(inside, rest / fallback_race, -1.0), axis=0, tie_break_left=True)
    drawn = tl.where(repeats.to(tl.float32) >= repeat_limit, second, first)
    greedy = tl.load(greedy_ptr + row) != 0
    chosen = tl.where(greedy, tl.argmax(logp, axis=0, tie_break_left=True), drawn).to(tl.int64)

    shifted = tl.load(recent_ptr + row * recent_row + places + 1, mask=places + 1 < WINDOW, other=0)
    tl.store(recent_ptr + row * recent_row + places, tl.where(places == WINDOW - 1, chosen, shifted), mask=in_window)
    tl.store(token_ptr + row, chosen)
    tl.store(count_ptr + row, count + 1)
    tl.store(out_ptr + row, chosen)


def choose_tokens(logits: torch.Tensor, state, start: int, stop: int, sampling) -> torch.Tensor:
    """`choose(logits.log_softmax(-1), state, start, stop, sampling)` in one kernel: logits (n, V)
    of rows start..stop-1 -> their tokens (n,) long, the state written as `choose` writes it."""
    rows = slice(start, stop)
    logits = logits.contiguous()
    n, vocab = logits.shape
    ban, recent = state.ban[rows], state.recent[rows]
    window = recent.shape[1]
    if min(sampling.top_k, vocab) > CANDIDATES_PAD or sampling.win_size > window:
        raise ValueError(f"the fused sampling kernel takes top_k <= {CANDIDATES_PAD} and a window at least "
                         f"win_size long (top_k {sampling.top_k}, window {window}, win_size {sampling.win_size})")
    out = torch.empty(n, dtype=torch.long, device=logits.device)
    _choose_kernel[(n,)](
        logits, ban, state.ban_until[rows], state.count[rows], state.key[rows], state.greedy[rows], recent,
        state.token[rows], out, vocab, logits.stride(0), ban.stride(0), recent.stride(0), sampling.top_p,
        sampling.win_size * sampling.tau_r, (NUCLEUS_DRAW * _GOLDEN) & MASK32, (FALLBACK_DRAW * _GOLDEN) & MASK32,
        TOP_K=min(sampling.top_k, vocab), K_PAD=CANDIDATES_PAD, WINDOW=window,
        WINDOW_PAD=triton.next_power_of_2(window), WIN_SIZE=sampling.win_size,
        BLOCK=triton.next_power_of_2(vocab), num_warps=8)
    return out
