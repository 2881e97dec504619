"""What the streaming flow keeps between chunks: per text segment, and the prompt's part per voice.

Under the DiT's chunk mask a frame never sees a later chunk, and every convolution is causal, so
once a chunk's frames are solved their keys/values (every ODE step, every block, both CFG rows)
and the position convolutions' inputs never change (`DiT.forward_cached`). A segment keeps them
(`StreamState`) and its next chunk computes only its new frames.

The prompt's leading chunks depend on the prompt alone (the pre-lookahead layer reads 3 tokens
ahead, so only chunks ending at least that many tokens before the prompt's end): `VoiceEntry`
keeps them for every request of the same prepared prompt, keyed by the prompt's content, the
model and its precision, least recently used first out.

One byte budget covers both (`FlowCache`): a block is allocated only when the budget allows it
(voice entries no segment uses are evicted first); when it does not, the segment goes on with the
recompute path (`flow_batch.flow_steps`), which gives the same audio. Sizes: a frame costs
steps x depth x 2 (k, v) x 2 (CFG rows) x heads x dim_head elements (1.8 MB in 16 bits for the
released model).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CacheGeometry:
    """The shape of the flow's caches: ODE steps, DiT depth, heads, head size, model width, the
    position convolutions' context, the chunk size in frames and in tokens, the pre-lookahead."""

    steps: int
    depth: int
    heads: int
    dim_head: int
    dim: int
    conv_context: int
    chunk_frames: int
    chunk_tokens: int
    lookahead: int
    dtype: torch.dtype
    device: torch.device

    @property
    def frame_bytes(self) -> int:
        return self.steps * self.depth * 2 * 2 * self.heads * self.dim_head * torch.finfo(self.dtype).bits // 8

    @property
    def step_frame_bytes(self) -> int:
        """One frame of both CFG rows at one ODE step: what a solve gathers per frame and step."""
        return self.frame_bytes // self.steps

    @property
    def conv_bytes(self) -> int:
        return self.steps * 2 * 2 * self.dim * self.conv_context * torch.finfo(self.dtype).bits // 8

    def prompt_frames(self, n_prompt_tokens: int) -> int:
        """Leading frames that depend on the prompt alone: whole chunks whose tokens' look-ahead
        stays inside the prompt."""
        return max(0, (n_prompt_tokens - self.lookahead) // self.chunk_tokens) * self.chunk_frames

    def new_block(self, frames: int) -> torch.Tensor:
        """(steps, depth, 2 k/v, 2 CFG rows, heads, frames, dim_head)."""
        return torch.empty(self.steps, self.depth, 2, 2, self.heads, frames, self.dim_head, dtype=self.dtype,
                           device=self.device)

    def zero_conv(self) -> torch.Tensor:
        """(steps, 2 CFG rows, 2 convs, dim, context): the state before frame 0."""
        return torch.zeros(self.steps, 2, 2, self.dim, self.conv_context, dtype=self.dtype, device=self.device)


@dataclass(eq=False)
class VoiceEntry:
    """The prompt-only leading frames of one voice: one block, the convolution state after it."""

    key: str
    block: torch.Tensor
    conv: torch.Tensor
    frames: int
    nbytes: int
    users: int = 0


@dataclass(eq=False)
class StreamState:
    """One segment's solved frames: blocks in frame order (the first may be a voice's), the
    convolution state after the last frame, and the frame count."""

    blocks: list[torch.Tensor]
    conv: torch.Tensor
    frames: int
    voice: VoiceEntry | None = None
    owned_bytes: int = 0


@dataclass
class CacheStats:
    hits: int = 0  # first chunks that found their voice's prompt frames
    misses: int = 0  # first chunks that solved the prompt frames themselves
    cached_works: int = 0  # chunks that read a segment's earlier frames (or a voice's)
    recomputed_works: int = 0  # streaming chunks that ran the recompute path (no room, or dropped)
    evictions: int = 0
    dropped: int = 0  # segment states and unused voice entries dropped after an out-of-memory


class FlowCache:
    """The byte budget over every segment's state and the voices' entries (see the module doc).
    budget_bytes 0 turns caching off. Thread-safe for the heartbeat's `report`."""

    def __init__(self, budget_bytes: int, max_voices: int = 64):
        self.budget = max(0, int(budget_bytes))
        self.max_voices = max_voices
        self.used = 0
        self.voices: OrderedDict[str, VoiceEntry] = OrderedDict()
        self.stats = CacheStats()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.budget > 0

    def reserve(self, nbytes: int) -> bool:
        """Count `nbytes` against the budget, evicting unused voices (oldest first) if needed;
        False (nothing counted) when they do not fit."""
        with self._lock:
            while self.used + nbytes > self.budget:
                victim = next((k for k, e in self.voices.items() if e.users == 0), None)
                if victim is None:
                    return False
                self.used -= self.voices.pop(victim).nbytes
                self.stats.evictions += 1
            self.used += nbytes
            return True

    def release(self, nbytes: int) -> None:
        with self._lock:
            self.used = max(0, self.used - nbytes)

    # ------------------------------------------------------------------ voices

    def voice(self, key: str) -> VoiceEntry | None:
        """The entry of a voice, marked used (the caller's state releases it), or None."""
        with self._lock:
            entry = self.voices.get(key)
            if entry is not None:
                self.voices.move_to_end(key)
                entry.users += 1
            return entry

    def unuse(self, entry: VoiceEntry | None) -> None:
        """A user of `voice` is done with it."""
        if entry is not None:
            with self._lock:
                entry.users = max(0, entry.users - 1)

    def add_voice(self, entry: VoiceEntry) -> bool:
        """Keep an entry whose bytes are already reserved, marked used once; False (nothing kept)
        when the voice has an entry already (two first chunks of one voice solved together)."""
        with self._lock:
            if entry.key in self.voices:
                return False
            entry.users += 1
            self.voices[entry.key] = entry
            while len(self.voices) > self.max_voices:
                victim = next((k for k, e in self.voices.items() if e.users == 0), None)
                if victim is None:
                    break
                self.used -= self.voices.pop(victim).nbytes
                self.stats.evictions += 1
            return True

    # ------------------------------------------------------------------ segment states

    def free(self, state: StreamState | None) -> None:
        """A segment is done with its state."""
        if state is None:
            return
        self.release(state.owned_bytes)
        state.owned_bytes = 0
        state.blocks.clear()
        self.unuse(state.voice)
        state.voice = None

    def drop_voices(self) -> None:
        """Forget every voice entry no segment uses (after an out-of-memory)."""
        with self._lock:
            for key in [k for k, e in self.voices.items() if e.users == 0]:
                self.used -= self.voices.pop(key).nbytes
                self.stats.dropped += 1

    def report(self) -> dict:
        with self._lock:
            s = self.stats
            first = s.hits + s.misses
            return {"budget_mb": round(self.budget / 2**20, 1), "used_mb": round(self.used / 2**20, 1),
                    "voices": len(self.voices), "hits": s.hits, "misses": s.misses,
                    "hit_rate": round(s.hits / first, 3) if first else None, "cached_works": s.cached_works,
                    "recomputed_works": s.recomputed_works, "evictions": s.evictions, "dropped": s.dropped}


def voice_key(prompt, model_tag: str) -> str:
    """A voice's cache key: the prompt tensors' content (tokens, mel, embedding), the model and
    the precision (`model_tag`)."""
    h = hashlib.sha256(model_tag.encode())
    for t in (prompt.tokens, prompt.mel, prompt.embedding):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()

