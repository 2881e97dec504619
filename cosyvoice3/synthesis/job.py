"""One request in progress: its text segments, their speech tokens, and the audio still to make.

A `SynthesisJob` does no computation of its own: the engine (`engine.py`) prefills and decodes its
segments in the shared token batch and runs its `ChunkWork`s through the batched flow and vocoder;
the job turns what comes back into the next work and into `AudioChunk`s.

Per text segment: speech tokens arrive one by one; when streaming, every time the hop schedule
(`cosyvoice3.decoding.streaming`) allows, a chunk of them becomes a `ChunkWork` (flow with the
streaming chunk mask over prompt + every token so far, the new mel frames kept, the vocoder over
the whole mel so far, the new samples sent); when the segment's tokens are complete, a final
work (full attention, finalize). Not streaming: one work per segment at its end. Works of a job
are done in order; the next segment starts decoding as soon as the previous one's tokens are
complete (its last chunk may still be in flight).

Deviations from the official code, on purpose: the hop schedule is per request (the official one
leaks across requests); cross-lingual text is normalised and split before the system prompt is
added (the official marker check skips both); speed also applies in streaming mode (per chunk of
new mel frames; the official streaming path ignores it).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from cosyvoice3.decoding.streaming import HopSchedule
from cosyvoice3.decoding.token_batch import SegmentSpec
from cosyvoice3.errors import BadInputError

from .flow_cache import voice_key
from .request import AudioChunk, SynthesisRequest, segment_seed


@dataclass
class PromptTensors:
    """A prepared prompt on the model's device: speech tokens (1, P) long, mel (1, 2P, 80),
    speaker embedding (1, 192)."""

    tokens: torch.Tensor
    mel: torch.Tensor
    embedding: torch.Tensor

    @classmethod
    def of(cls, prompt, device, dtype) -> "PromptTensors":
        return cls(torch.from_numpy(prompt.speech_tokens.astype(np.int64))[None].to(device),
                   torch.from_numpy(prompt.mel)[None].to(device, dtype),
                   torch.from_numpy(prompt.embedding)[None].to(device, dtype))


class Segment:
    """One text segment of a job: its LLM inputs, tokens so far, streaming state, mel so far."""

    def __init__(self, job: "SynthesisJob", index: int, spec: SegmentSpec, stream: bool, n_prompt_tokens: int):
        self.job, self.index, self.spec = job, index, spec
        self.tokens: list[int] = []
        self.schedule = HopSchedule(n_prompt_tokens=n_prompt_tokens) if stream else None
        self.decoded = False  # every token is in
        self.mel_parts: list[torch.Tensor] = []  # (1, 80, t) pieces, speed applied
        self.flow_state = None  # what its solved streaming chunks left (`flow_cache.StreamState`)
        self.flow_cached = True  # False once a chunk took the recompute path: the later ones do too
        self.samples_sent = 0
        self.chunks_sent = 0

    def __repr__(self) -> str:
        return f"Segment({self.job.request_id}#{self.index})"


@dataclass(eq=False)
class ChunkWork:
    """Audio to make from segment.tokens[:n_tokens]: the flow's mel frames from `done_frames` on
    (streaming: chunk attention, the last look-ahead tokens are context only; else full attention
    and finalize), then the vocoder over the segment's whole mel so far."""

    segment: Segment
    n_tokens: int
    done_frames: int
    streaming: bool
    final: bool  # the last work of its segment (vocoder finalizes)
    first: bool  # the first audio of its request
    created: float = field(default_factory=time.monotonic)

    @property
    def job(self) -> "SynthesisJob":
        return self.segment.job


class SynthesisJob:
    """A request in progress. `model` is a loaded `CosyVoice3` (for its planning, tokenizer and
    sample rate); request_id names it in logs and errors. Validation happens here, before any
    work: a bad request raises a `CosyVoiceError` from the constructor. `spec`: the request's
    spec as checked (`cosyvoice3.spec`; the one that arrived, when it was checked where the request
    entered); every field of the request is read from it. `planned`: (checked spec, segments) of
    `model.plan` already run to its end (the worker plans long texts between rounds); None: planned
    here, at once."""

    def __init__(self, model, request: SynthesisRequest, request_id: str = "",
                 planned: tuple | None = None):
        self.model, self.request, self.request_id = model, request, request_id
        self.spec, self.segments = planned or model.plan_segments(request)
        self.mode = self.spec.mode
        if not 0 <= request.start_segment <= len(self.segments):
            raise BadInputError(f"start_segment {request.start_segment} outside 0..{len(self.segments)}")
        self.prompt = PromptTensors.of(request.prompt, model.device, model.dtype)
        self.arrived = time.monotonic()
        self.first_audio_at: float | None = None
        self.audio_sent_s = 0.0
        self.pending: deque[ChunkWork] = deque()
        self.joining: Segment | None = None  # the segment that waits for a row of the token batch
        self.decoding: Segment | None = None  # the segment in the token batch
        self.next_index = request.start_segment
        self.cancelled = False
        self.failed = False
        self._voice_key: str | None = None
        self.t_start = time.perf_counter()
        self.stats: dict = {"mode": self.mode, "segments": len(self.segments), "speech_tokens": 0,
                            "audio_s": 0.0, "first_chunk_s": None, "wall_s": 0.0, "rtf": None,
                            "timeline_s": {}}  # seconds from the start: joined, first_work, first_audio
        self._start_next_segment()

    # ------------------------------------------------------------------ state

    @property
    def done(self) -> bool:
        return self.cancelled or self.failed or (
            self.next_index >= len(self.segments) and self.joining is None and self.decoding is None
            and not self.pending)

    @property
    def progress(self) -> float:
        if not self.segments:
            return 1.0
        inner = 0.0
        seg = self.decoding or self.joining
        if seg is not None and self.decoding is not None:
            limit = self.model.config.llm.max_token_text_ratio * max(1, len(seg.spec.text_ids))
            inner = 0.9 * len(seg.tokens) / max(1, seg.spec.forced_tokens or limit)
            done = seg.index
        else:
            done = self.next_index
        return min(1.0, (done + inner) / len(self.segments))

    def voice_key(self, model_tag: str) -> str:
        """The prompt's key in the flow cache (computed once)."""
        if self._voice_key is None:
            self._voice_key = voice_key(self.prompt, model_tag)
        return self._voice_key

    def due(self) -> float:
        """When the listener needs this request's next audio: at once for the first audio (its
        arrival time), else when the audio sent so far has played out."""
        if self.first_audio_at is None:
            return self.arrived
        return self.first_audio_at + self.audio_sent_s

    # ------------------------------------------------------------------ segments and tokens

    def _start_next_segment(self) -> None:
        if self.next_index >= len(self.segments):
            return
        index = self.next_index
        self.next_index += 1
        prompt_ids, text_ids, speech = self.model.llm_inputs(self.spec, self.segments[index], self.request.prompt)
        spec = SegmentSpec(prompt_ids, text_ids, [int(t) for t in speech],
                           key=segment_seed(self.spec.seed, index), forced_tokens=self.request.forced_tokens)
        self.joining = Segment(self, index, spec, self.spec.stream, self.prompt.tokens.shape[1])

    def joined(self, segment: Segment) -> None:
        self.joining, self.decoding = None, segment
        self._mark("joined")

    def _mark(self, event: str) -> None:
        self.stats["timeline_s"].setdefault(event, round(time.perf_counter() - self.t_start, 4))

    def on_tokens(self, segment: Segment, emitted: list[int], finished: bool) -> None:
        """Tokens from the batch: queue the chunk works they make possible."""
        segment.tokens.extend(emitted)
        schedule = segment.schedule
        while schedule is not None and schedule.ready(len(segment.tokens)):
            done_frames = self.model.config.flow.token_mel_ratio * schedule.offset
            _, end = schedule.advance()
            self._queue(ChunkWork(segment, end + schedule.lookahead, done_frames, streaming=True, final=False,
                                  first=self._first_pending()))
        if finished:
            segment.decoded = True
            self.stats["speech_tokens"] += len(segment.tokens)
            offset = schedule.offset if schedule is not None else 0
            self._queue(ChunkWork(segment, len(segment.tokens), self.model.config.flow.token_mel_ratio * offset,
                                  streaming=False, final=True, first=self._first_pending()))
            if self.decoding is segment:
                self.decoding = None
            self._start_next_segment()

    def _first_pending(self) -> bool:
        return self.first_audio_at is None and not self.pending

    def _queue(self, work: ChunkWork) -> None:
        self._mark("first_work")
        self.pending.append(work)

    # ------------------------------------------------------------------ audio

    def new_mel_part(self, mel: torch.Tensor | None) -> torch.Tensor | None:
        """The flow's new frames for a work (1, 80, M) with this request's speed applied."""
        if mel is None or not mel.shape[2]:
            return None
        return change_speed(mel, float(self.spec.speed))

    def vocoder_input(self, work: ChunkWork, part: torch.Tensor | None) -> torch.Tensor | None:
        """The segment's whole mel so far, with the work's new part: (80, T), or None if empty."""
        parts = work.segment.mel_parts + ([part] if part is not None else [])
        return torch.cat(parts, dim=2)[0] if parts else None

    def add_audio(self, work: ChunkWork, part: torch.Tensor | None, wav: torch.Tensor | None) -> AudioChunk:
        """Keep the work's mel part; `wav`: the vocoder's samples of the segment from the ones
        already sent on (None: nothing new) -> the chunk."""
        seg = work.segment
        if part is not None:
            seg.mel_parts.append(part)
        if wav is None:
            pcm = np.zeros(0, np.float32)
        else:
            pcm = wav.float().cpu().numpy()
            seg.samples_sent += len(pcm)
        if self.pending and self.pending[0] is work:
            self.pending.popleft()
        chunk = AudioChunk(pcm.astype(np.float32, copy=False), self.model.sample_rate, seg.index, seg.chunks_sent,
                           work.final)
        seg.chunks_sent += 1
        self._account(pcm)
        return chunk

    def _account(self, pcm: np.ndarray) -> None:
        now = time.perf_counter() - self.t_start
        if len(pcm) and self.first_audio_at is None:
            self.first_audio_at = time.monotonic()
            self._mark("first_audio")
        if self.stats["first_chunk_s"] is None and len(pcm):
            self.stats["first_chunk_s"] = round(now, 4)
        self.audio_sent_s += len(pcm) / self.model.sample_rate
        self.stats["audio_s"] = round(self.audio_sent_s, 4)
        self.stats["wall_s"] = round(now, 4)
        if self.stats["audio_s"] > 0:
            self.stats["rtf"] = round(now / self.stats["audio_s"], 4)


def change_speed(mel: torch.Tensor, speed: float) -> torch.Tensor:
    """Time-stretch a mel (1, 80, T) to int(T / speed) frames by linear interpolation."""
    if speed == 1.0 or mel.shape[2] == 0:
        return mel
    return F.interpolate(mel.float(), size=max(1, int(mel.shape[2] / speed)), mode="linear").to(mel.dtype)
