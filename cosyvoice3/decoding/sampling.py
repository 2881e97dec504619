"""Choosing the next speech token from log-probabilities.

Owns repetition-aware sampling (RAS, VALL-E 2, as configured for CosyVoice3: top-p 0.8,
top-k 25, window 10, tau_r 0.1) and greedy choice. Everything is vectorised over a batch and
stays on the device: no Python loop over candidates, no GPU->CPU sync, so a sampling step can
be captured in a CUDA graph together with the decode step. Every random draw comes from the
`torch.Generator` passed in (one per request); the global RNG is never touched.

Semantics follow the official `ras_sampling` (reference section 4.5):
1. p = softmax(logp); stable descending sort; entry i of the sorted list is kept iff the
   cumulative probability before it is < top_p and i < top_k (so the entry that crosses top_p
   is included); one entry is drawn in proportion to the kept, unnormalised probabilities.
2. If the drawn id occurs at least win_size * tau_r times among the last win_size emitted
   tokens, that id is masked and a token is drawn from the full distribution instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EMPTY_SLOT = -1  # marks unused places of a `recent` window


def sample_categorical(weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Draw one index per row in proportion to `weights` (B, N), non-negative, unnormalised.

    Exponential race: argmax_i w_i / E_i with E_i ~ Exp(1) picks i with probability
    w_i / sum(w). One fixed-size draw per call, no host sync (unlike `torch.multinomial`).
    Returns (B,) long.
    """
    race = torch.empty(weights.shape, device=weights.device, dtype=torch.float32)
    race.exponential_(generator=generator).clamp_(min=torch.finfo(torch.float32).tiny)
    return (weights.float() / race).argmax(dim=-1)


def nucleus_sample(probs: torch.Tensor, generator: torch.Generator, top_p: float = 0.8,
                   top_k: int = 25) -> torch.Tensor:
    """probs: (B, V) probabilities -> (B,) long, drawn from the top-p/top-k set defined above."""
    sorted_probs, sorted_ids = probs.sort(dim=-1, descending=True, stable=True)
    sorted_probs, sorted_ids = sorted_probs[:, :top_k], sorted_ids[:, :top_k]  # (B, k)
    prob_before = F.pad(sorted_probs.cumsum(dim=-1)[:, :-1], (1, 0))  # exclusive cumulative sum
    kept = torch.where(prob_before < top_p, sorted_probs, torch.zeros_like(sorted_probs))
    choice = sample_categorical(kept, generator)  # index into the sorted list
    return sorted_ids.gather(-1, choice[:, None])[:, 0]


def ras_sample(logp: torch.Tensor, recent: torch.Tensor, generator: torch.Generator, top_p: float = 0.8,
               top_k: int = 25, win_size: int = 10, tau_r: float = 0.1) -> torch.Tensor:
    """Repetition-aware sampling.

    logp: (B, V) log-probabilities (masked ids at -inf); recent: (B, W) long, the last emitted
    tokens, oldest first, unused places = EMPTY_SLOT (only the last win_size are looked at).
    Returns (B,) long. Both candidate draws are always made (fixed shapes, no branch on device
    data); the fallback is used only where the nucleus draw repeats.
    """
    probs = logp.float().softmax(dim=-1)  # (B, V)
    first = nucleus_sample(probs, generator, top_p, top_k)  # (B,)
    repeats = (recent[:, -win_size:] == first[:, None]).sum(dim=-1)  # (B,)
    fallback = sample_categorical(probs.scatter(-1, first[:, None], 0.0), generator)
    return torch.where(repeats >= win_size * tau_r, fallback, first)


def greedy(logp: torch.Tensor) -> torch.Tensor:
    """logp: (B, V) -> (B,) long, the first index of the maximum."""
    return logp.argmax(dim=-1)


def push_recent(recent: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Append tokens (B,) to the window recent (B, W), dropping the oldest entry."""
    return torch.cat([recent[:, 1:], tokens[:, None].to(recent.dtype)], dim=1)


def empty_recent(batch: int, win_size: int, device) -> torch.Tensor:
    return torch.full((batch, win_size), EMPTY_SLOT, dtype=torch.long, device=device)
