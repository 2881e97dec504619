"""Speech tokens -> mel frames for several chunk works at once: one CFM solve for all of them.

Each work brings its own prompt, tokens, attention rule (streaming chunks or full) and length.
Their ODE conditions are prepared one by one (cheap), right-padded to the longest and solved
together: the DiT sees 2N rows (CFG), padded frames are masked out of every real frame's
attention and its convolutions are causal, so each work gets the mel it would get alone (up to
floating-point rounding). The noise of a work is the fixed noise from frame 0 on, as alone.
"""

from __future__ import annotations

from collections.abc import Generator

import torch

from .job import ChunkWork


def works_needing_flow(works: list[ChunkWork], token_mel_ratio: int) -> list[ChunkWork]:
    """The works that have new tokens to turn into mel (a final work may have none left)."""
    return [w for w in works if w.n_tokens * token_mel_ratio > w.done_frames]


def frames_of(work: ChunkWork, token_mel_ratio: int, lookahead: int) -> int:
    """Mel frames of the flow call of a work: prompt + its tokens (less the look-ahead when streaming)."""
    n = work.job.prompt.tokens.shape[1] + work.n_tokens - (lookahead if work.streaming else 0)
    return token_mel_ratio * n


def flow_steps(flow, noise_source, works: list[ChunkWork], estimator=None) -> Generator[None, None, list[torch.Tensor]]:
    """The flow solve of `works` as a generator that pauses after each ODE step but the last (its
    caller may decode between them) and returns the new mel frames of each work, (1, 80, M_i)
    float32 each, in the order of `works`. Advance it under `torch.inference_mode()` (a context
    held across pauses would not nest with the caller's)."""
    device = flow.input_embedding.weight.device
    conds = []
    for w in works:
        tokens = torch.tensor(w.segment.tokens[:w.n_tokens], dtype=torch.long, device=device)[None]
        p = w.job.prompt
        mu, cond, spks, n_prompt = flow.prepare(tokens, p.tokens, p.mel, p.embedding, finalize=not w.streaming)
        conds.append((mu, cond, spks, n_prompt))
    lengths = [c[0].shape[2] for c in conds]
    width = max(lengths)
    n = len(works)
    mu = torch.zeros(n, conds[0][0].shape[1], width, device=device, dtype=conds[0][0].dtype)
    cond = torch.zeros_like(mu)
    mask = torch.zeros(n, 1, width, device=device, dtype=mu.dtype)
    for i, (m, c, _, _) in enumerate(conds):
        mu[i, :, :lengths[i]] = m[0]
        cond[i, :, :lengths[i]] = c[0]
        mask[i, :, :lengths[i]] = 1
    spks = torch.cat([c[2] for c in conds])
    chunk = torch.tensor([flow.chunk_frames(w.streaming) for w in works], dtype=torch.long, device=device)
    noise = noise_source.flow_noise(width, device, torch.float32).expand(n, -1, -1)
    mel = yield from flow.solve_steps(mu, cond, spks, mask, chunk, noise, estimator)
    out = []
    for i, (w, (_, _, _, n_prompt)) in enumerate(zip(works, conds)):
        out.append(mel[i:i + 1, :, n_prompt + w.done_frames:lengths[i]])
    return out
