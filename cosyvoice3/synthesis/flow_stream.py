"""Streaming chunk works through the cached flow: only each chunk's new frames are solved.

A streaming (non-final) work of a segment needs the mel of tokens [offset, end) under the chunk
mask. `flow_cached_steps` solves the frames after those its segment already solved (or after its
voice's prompt frames, for a first chunk), reading their keys/values and convolution state
(`flow_cache`), and keeps what the new frames leave for the next chunk. Works of several requests
go in one solve: new frames right-padded, cached frames gathered per ODE step into one padded
tensor. Its plain twin is `flow_batch.flow_steps` (the same works solved over every frame), which
a work falls back to when the cache has no room for it; both give the same mel up to float
rounding. Final works (full attention) always take the plain path.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

import torch

from .flow_cache import CacheGeometry, FlowCache, StreamState, VoiceEntry
from .job import ChunkWork


def geometry_of(flow, estimator) -> CacheGeometry:
    depth, heads, dim_head, context = estimator.cache_shape()
    cfg = flow.cfg
    return CacheGeometry(steps=cfg.cfm.n_timesteps, depth=depth, heads=heads, dim_head=dim_head, dim=cfg.dit.dim,
                         conv_context=context, chunk_frames=cfg.dit.static_chunk_size,
                         chunk_tokens=cfg.dit.static_chunk_size // cfg.token_mel_ratio,
                         lookahead=cfg.pre_lookahead_len, dtype=estimator.dtype,
                         device=flow.input_embedding.weight.device)


@dataclass(eq=False)
class _Row:
    work: ChunkWork
    mu: torch.Tensor  # (1, 80, T) every frame of the work
    cond: torch.Tensor
    spks: torch.Tensor
    n_prompt: int
    start: int  # first frame solved now (the frames before it are cached)
    past: list[torch.Tensor]  # blocks of the frames before `start`
    past_conv: torch.Tensor  # (steps, 2, 2, dim, k) after frame `start`
    voice_frames: int  # > 0: frames [0, voice_frames) become a new voice entry
    voice_block: torch.Tensor | None
    own_block: torch.Tensor
    conv: torch.Tensor  # the state after the last solved frame, filled step by step
    voice_conv: torch.Tensor | None
    state: StreamState | None  # the segment's state before this work
    voice: VoiceEntry | None  # a voice entry this row read
    key: str  # the voice's cache key ("" when the segment had a state)
    reserved: int  # bytes counted for the segment's new block and state
    voice_reserved: int = 0  # bytes counted for a new voice entry
    mel: torch.Tensor | None = None  # (1, 80, end - start) after the solve

    @property
    def end(self) -> int:
        return self.mu.shape[2]


def cacheable(work: ChunkWork) -> bool:
    """A streaming work of a segment whose earlier chunks were all cached."""
    return work.streaming and work.segment.flow_cached


def flow_cached_steps(flow, noise_source, works: list[ChunkWork], estimator, geom: CacheGeometry, cache: FlowCache,
                      model_tag: str, keep: Callable[[ChunkWork], bool] = lambda w: True
                      ) -> Generator[None, None, tuple[dict[int, torch.Tensor], list[ChunkWork]]]:
    """Solve the new frames of streaming `works` with their caches (`geom`: `geometry_of(flow,
    estimator)`), as a generator that pauses after each ODE step but the last (advance it under
    `torch.inference_mode()`). It returns ({id(work): new mel (1, 80, M) float32}, the works that
    found no room in the cache: their segments go on with the recompute path, and so must they).
    The segments' states are replaced only after the whole solve succeeded; on an error the
    reservations are returned. A work that `keep` refuses when the solve ends (its request
    was cancelled meanwhile) leaves no state: its reservation is returned. Closing the generator
    before its end returns every reservation."""
    device = geom.device
    rows, no_room = [], []
    try:
        for w in works:
            row = _plan(flow, geom, cache, w, model_tag, device)
            if row is None:
                no_room.append(w)
                cache.stats.recomputed_works += 1
            else:
                rows.append(row)
        if rows:
            yield from _solve_steps(flow, noise_source, rows, geom, estimator)
    except BaseException:
        for row in rows:
            _undo(cache, row)
        raise
    out = {}
    for row in rows:
        w = row.work
        if not keep(w):
            _undo(cache, row)
            continue
        _commit(cache, row)
        first = row.n_prompt + w.done_frames - row.start
        out[id(w)] = row.mel[:, :, first:]
        cache.stats.cached_works += 1
    for w in no_room:
        drop_state(cache, w.segment)
    return out, no_room


def drop_state(cache: FlowCache, segment) -> None:
    """The segment leaves the cached path for good (its later chunks recompute)."""
    cache.free(segment.flow_state)
    segment.flow_state = None
    segment.flow_cached = False


def _plan(flow, geom: CacheGeometry, cache: FlowCache, w: ChunkWork, model_tag: str, device) -> _Row | None:
    seg, job = w.segment, w.job
    p = job.prompt
    tokens = torch.tensor(seg.tokens[:w.n_tokens], dtype=torch.long, device=device)[None]
    mu, cond, spks, n_prompt = flow.prepare(tokens, p.tokens, p.mel, p.embedding, finalize=False)
    end = mu.shape[2]
    state, voice, voice_frames, key = seg.flow_state, None, 0, ""
    if state is not None:
        start, past, past_conv = state.frames, list(state.blocks), state.conv
    else:
        key = job.voice_key(model_tag)
        voice = cache.voice(key)
        if voice is not None:
            cache.stats.hits += 1
            start, past, past_conv = voice.frames, [voice.block], voice.conv
        else:
            cache.stats.misses += 1
            start, past, past_conv = 0, [], geom.zero_conv()
            voice_frames = min(geom.prompt_frames(p.tokens.shape[1]), end)
    conv = geom.conv_bytes if state is None else 0  # a segment holds one conv state; later chunks replace it
    own = end - max(start, voice_frames)
    need = own * geom.frame_bytes + conv
    if not cache.reserve(need):
        cache.unuse(voice)
        return None
    reserved, voice_reserved = need, 0
    voice_block = voice_conv = None
    if voice_frames and cache.reserve(voice_frames * geom.frame_bytes + geom.conv_bytes):
        voice_reserved = voice_frames * geom.frame_bytes + geom.conv_bytes
        voice_block, voice_conv = geom.new_block(voice_frames), geom.zero_conv()
    elif voice_frames:  # no room for the voice's entry: the segment keeps those frames itself
        cache.release(need)
        own, voice_frames = end - start, 0
        need = own * geom.frame_bytes + conv
        if not cache.reserve(need):
            return None
        reserved = need
    return _Row(w, mu, cond, spks, n_prompt, start, past, past_conv, voice_frames, voice_block,
                geom.new_block(own), geom.zero_conv(), voice_conv, state, voice, key, reserved, voice_reserved)


def _solve_steps(flow, noise_source, rows: list[_Row], geom: CacheGeometry, estimator):
    n = len(rows)
    device = geom.device
    width = max(r.end - r.start for r in rows)
    n_past = max(r.start for r in rows)
    dtype = rows[0].mu.dtype
    mu = torch.zeros(n, rows[0].mu.shape[1], width, device=device, dtype=dtype)
    cond = torch.zeros_like(mu)
    mask = torch.zeros(n, 1, width, device=device, dtype=dtype)
    noise = torch.zeros(n, mu.shape[1], width, device=device, dtype=torch.float32)
    full_noise = noise_source.flow_noise(max(r.end for r in rows), device, torch.float32)
    for i, r in enumerate(rows):
        k = r.end - r.start
        mu[i, :, :k] = r.mu[0, :, r.start:]
        cond[i, :, :k] = r.cond[0, :, r.start:]
        mask[i, :, :k] = 1
        noise[i, :, :k] = full_noise[0, :, r.start:r.end]
    spks = torch.cat([r.spks for r in rows])
    past_len = torch.tensor([r.start for r in rows], dtype=torch.long, device=device)
    kv = estimator.past_buffer(2 * n, n_past)  # filled in place when the estimator has one
    if kv is None:
        kv = torch.zeros(geom.depth, 2, 2 * n, geom.heads, n_past, geom.dim_head, dtype=geom.dtype, device=device)
    conv = torch.zeros(2 * n, 2, geom.dim, geom.conv_context, dtype=geom.dtype, device=device)

    def read_past(step: int):
        for i, r in enumerate(rows):
            at = 0
            for block in r.past:
                k = block.shape[5]
                kv[:, :, i, :, at:at + k] = block[step, :, :, 0]
                kv[:, :, n + i, :, at:at + k] = block[step, :, :, 1]
                at += k
            conv[i] = r.past_conv[step, 0]
            conv[n + i] = r.past_conv[step, 1]
        return kv, conv

    def keep_new(step: int, new_kv: torch.Tensor, conv_in: torch.Tensor) -> None:
        for i, r in enumerate(rows):
            k = r.end - r.start
            split = r.voice_frames - r.start if r.voice_frames else 0
            for cfg_row, b in ((0, i), (1, n + i)):
                if split:
                    r.voice_block[step, :, :, cfg_row] = new_kv[:, :, b, :, :split]
                    r.voice_conv[step, cfg_row] = _tail(r.past_conv[step, cfg_row], conv_in[b, :, :, :split],
                                                        geom.conv_context)
                r.own_block[step, :, :, cfg_row] = new_kv[:, :, b, :, split:k]
                r.conv[step, cfg_row] = _tail(r.past_conv[step, cfg_row], conv_in[b, :, :, :k], geom.conv_context)

    mel = yield from flow.solve_continued_steps(mu, cond, spks, mask, past_len, noise, estimator, read_past, keep_new)
    for i, r in enumerate(rows):
        r.mel = mel[i:i + 1, :, :r.end - r.start]


def _tail(before: torch.Tensor, new: torch.Tensor, context: int) -> torch.Tensor:
    """The last `context` frames of `before` followed by `new` (both (2, dim, t))."""
    return torch.cat([before, new.to(before.dtype)], dim=-1)[..., -context:]


def _commit(cache: FlowCache, row: _Row) -> None:
    seg = row.work.segment
    blocks = list(row.past)
    voice = row.voice if row.state is None else row.state.voice
    owned = (row.state.owned_bytes if row.state is not None else 0) + row.reserved
    if row.voice_block is not None:
        voice = VoiceEntry(row.key, row.voice_block, row.voice_conv, row.voice_frames, row.voice_reserved)
        if not cache.add_voice(voice):  # the segment keeps the frames as its own
            voice, owned = None, owned + row.voice_reserved
        blocks = [row.voice_block]
    blocks.append(row.own_block)
    seg.flow_state = StreamState(blocks, row.conv, row.end, voice, owned)


def _undo(cache: FlowCache, row: _Row) -> None:
    cache.release(row.reserved + row.voice_reserved)
    if row.state is None:
        cache.unuse(row.voice)
