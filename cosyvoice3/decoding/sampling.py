"""Choosing the next speech token from log-probabilities, for a batch of independent requests.

Owns repetition-aware sampling (RAS, VALL-E 2, as configured for CosyVoice3: top-p 0.8,
top-k 25, window 10, tau_r 0.1), greedy choice, and the randomness they draw on. Everything is
vectorised over the batch and stays on the device: no Python loop over candidates, no GPU->CPU
sync, so a sampling step can be captured in a CUDA graph together with the decode step.

Randomness is counter-based: the uniform numbers of a row are a hash of (the row's key, the
row's step counter, which draw, the candidate index), computed with 32-bit integer arithmetic
(in int64 tensors, products split so nothing overflows). A row's draws therefore do not depend
on which other rows share the batch, on the batch size or on the device: the same request gives
the same tokens alone or batched with others. The key of a request segment comes from its seed
(`cosyvoice3.pipeline` derives it from the request seed and the segment index); the counter is
the number of tokens the row has chosen so far. The global RNG is never touched.

Semantics follow the official `ras_sampling` (reference section 4.5):
1. p = softmax(logp); stable descending sort; entry i of the sorted list is kept iff the
   cumulative probability before it is < top_p and i < top_k (so the entry that crosses top_p
   is included); one entry is drawn in proportion to the kept, unnormalised probabilities. The
   first top_k entries of that sort are found without sorting the vocabulary (`top_candidates`:
   a top-k, ties at its threshold resolved as the stable sort resolves them; its plain twin
   `sorted_candidates` sorts everything).
2. If the drawn id occurs at least win_size * tau_r times among the last win_size emitted
   tokens, that id is masked and a token is drawn from the full distribution instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EMPTY_SLOT = -1  # marks unused places of a `recent` window
MASK32 = 0xFFFFFFFF
NUCLEUS_DRAW, FALLBACK_DRAW = 1, 2  # the two draws of a RAS step use different streams
_GOLDEN = 0x9E3779B9


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for x in [0, 2^32) held in int64, without int64 overflow."""
    lo, hi = x & 0xFFFF, x >> 16
    return (lo * c + (((hi * c) & 0xFFFF) << 16)) & MASK32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash with full avalanche (the "lowbias32" finalizer) on int64 tensors
    holding values in [0, 2^32)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def row_stream(key: torch.Tensor, counter: torch.Tensor, draw: int) -> torch.Tensor:
    """The 32-bit stream id of one draw of each row: key (B,) int64 (63 bits used), counter (B,)
    int64 -> (B,) int64 in [0, 2^32)."""
    h = mix32((key >> 32) & MASK32)
    h = mix32((key & MASK32) ^ h)
    h = mix32(((counter & MASK32) + h) & MASK32)
    return mix32(h ^ ((draw * _GOLDEN) & MASK32))


def counter_uniform(key: torch.Tensor, counter: torch.Tensor, draw: int, n: int) -> torch.Tensor:
    """Uniform numbers in (0, 1), (B, n) float32: entry (b, i) is a function of (key[b],
    counter[b], draw, i) alone. 24 random bits each, so every value is exact in float32."""
    stream = row_stream(key, counter, draw)  # (B,)
    index = torch.arange(n, device=key.device, dtype=torch.int64)
    bits = mix32((stream[:, None] + _mul32(index + 1, _GOLDEN)[None, :]) & MASK32)  # (B, n)
    bits = mix32(bits ^ stream[:, None])  # a second round: no structure left between neighbours
    return ((bits >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def sample_categorical(weights: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Draw one index per row in proportion to `weights` (B, N), non-negative, unnormalised, from
    the uniform numbers (B, N) given (one per entry).

    Exponential race: argmax_i w_i / E_i with E_i = -log(u_i) ~ Exp(1) picks i with probability
    w_i / sum(w). One fixed-size draw per call, no host sync (unlike `torch.multinomial`).
    Returns (B,) long.
    """
    race = -torch.log(uniform)
    return (weights.float() / race).argmax(dim=-1)


def top_candidates(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first k entries of a stable descending sort of probs (B, V): their probabilities and
    ids, (B, k) each, found without sorting V (`sorted_candidates` is the plain twin and oracle).

    The k-th largest value t comes from a top-k; every entry above t is in, and of the entries
    equal to t the lowest ids fill the rest (as a stable sort orders them); the k chosen ids are
    listed in ascending order (a top-k of a score that falls with the id), then sorted stably by
    probability over the k alone."""
    vocab = probs.shape[-1]
    threshold = probs.topk(k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)  # (B, 1)
    above = probs > threshold
    tied = probs == threshold
    room = k - above.sum(dim=-1, keepdim=True)  # how many ties at the threshold are in
    chosen = above | (tied & (tied.cumsum(dim=-1) <= room))
    falling = torch.arange(vocab, 0, -1, device=probs.device, dtype=torch.int32)  # V .. 1
    ids = (chosen.to(torch.int32) * falling).topk(k, dim=-1).indices  # (B, k), ascending ids
    order = probs.gather(-1, ids).sort(dim=-1, descending=True, stable=True).indices
    ids = ids.gather(-1, order)
    return probs.gather(-1, ids), ids


def sorted_candidates(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain twin of `top_candidates`: a stable descending sort of all V, cut at k."""
    sorted_probs, sorted_ids = probs.sort(dim=-1, descending=True, stable=True)
    return sorted_probs[:, :k], sorted_ids[:, :k]


def nucleus_sample(probs: torch.Tensor, uniform: torch.Tensor, top_p: float = 0.8, top_k: int = 25,
                   candidates=top_candidates) -> torch.Tensor:
    """probs: (B, V) probabilities, uniform: (B, >= top_k) -> (B,) long, drawn from the top-p/top-k
    set defined above (the uniform number of the i-th sorted candidate is uniform[:, i]).
    `candidates`: how the top_k are found (`top_candidates`, or its twin `sorted_candidates`)."""
    sorted_probs, sorted_ids = candidates(probs, min(top_k, probs.shape[-1]))  # (B, k)
    prob_before = F.pad(sorted_probs.cumsum(dim=-1)[:, :-1], (1, 0))  # exclusive cumulative sum
    kept = torch.where(prob_before < top_p, sorted_probs, torch.zeros_like(sorted_probs))
    choice = sample_categorical(kept, uniform[:, :kept.shape[1]])  # index into the sorted list
    return sorted_ids.gather(-1, choice[:, None])[:, 0]


def ras_sample(logp: torch.Tensor, recent: torch.Tensor, key: torch.Tensor, counter: torch.Tensor,
               top_p: float = 0.8, top_k: int = 25, win_size: int = 10, tau_r: float = 0.1,
               candidates=top_candidates) -> torch.Tensor:
    """Repetition-aware sampling.

    logp: (B, V) log-probabilities (masked ids at -inf); recent: (B, W) long, the last emitted
    tokens, oldest first, unused places = EMPTY_SLOT (only the last win_size are looked at);
    key, counter: (B,) int64, each row's random stream and step (see the module docstring).
    Returns (B,) long. Both candidate draws are always made (fixed shapes, no branch on device
    data); the fallback is used only where the nucleus draw repeats. `candidates`: as in
    `nucleus_sample` (the twin, `sorted_candidates`, gives the same tokens).
    """
    probs = logp.float().softmax(dim=-1)  # (B, V)
    first = nucleus_sample(probs, counter_uniform(key, counter, NUCLEUS_DRAW, top_k), top_p, top_k,
                           candidates)  # (B,)
    repeats = (recent[:, -win_size:] == first[:, None]).sum(dim=-1)  # (B,)
    fallback = sample_categorical(probs.scatter(-1, first[:, None], 0.0),
                                  counter_uniform(key, counter, FALLBACK_DRAW, probs.shape[1]))
    return torch.where(repeats >= win_size * tau_r, fallback, first)


def greedy(logp: torch.Tensor) -> torch.Tensor:
    """logp: (B, V) -> (B,) long, the first index of the maximum."""
    return logp.argmax(dim=-1)


def push_recent(recent: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Append tokens (B,) to the window recent (B, W), dropping the oldest entry."""
    return torch.cat([recent[:, 1:], tokens[:, None].to(recent.dtype)], dim=1)


def empty_recent(batch: int, win_size: int, device) -> torch.Tensor:
    return torch.full((batch, win_size), EMPTY_SLOT, dtype=torch.long, device=device)
