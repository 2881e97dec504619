"""Many requests on one model at once: batched prefill and decode steps, batched flow and vocoder.

The engine holds the jobs in progress (`job.SynthesisJob`) and one `TokenBatch` (KV-cache rows
shared by every decoding segment). It does what it is told, one stage at a time:
- `join(segments)`: prefill segments that wait for a row (batched) and take their first tokens;
- `decode()`: one speech token for every decoding segment (one batched step);
- `start_audio(works)` / `step_audio()`: chunk works through the flow (batched CFM solves, kept
  in flight and advanced one ODE step per call or to their end) and the vocoder (one batched
  conv stack), giving each job its `AudioChunk`s. Streaming chunks solve only their
  new frames, reading what earlier chunks of their segment (and their voice's prompt) left in
  the flow cache (`flow_stream.py`, `flow_cache.py`); final chunks and chunks the cache has no
  room for solve every frame (`flow_batch.py`), with the same result.
What to do next, and with how much, is the policy's choice (`policy.py`); the engine only offers
what is possible (`joinable`, `decoding`, `ready_works`).

Failures are contained: a stage that runs out of memory is retried on halves of its batch, down to
single requests (a cached flow solve that runs out of memory first drops the caches of its works,
which then solve every frame, and the voices' entries); what still fails (or fails for any other reason of its own) fails only its job,
which the caller reports (`Outcome.failed`). A CUDA error that is not out-of-memory is raised: the
process is not trusted after it. `hook(job, stage)` is called for every job about to take part in
a stage (tests inject faults there; it may raise as the stage would).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch

from cosyvoice3.backends import TorchChunkEstimator
from cosyvoice3.decoding.streaming import LOOKAHEAD
from cosyvoice3.decoding.prefix_store import PrefixStore
from cosyvoice3.decoding.token_batch import TokenBatch, decode_rows
from cosyvoice3.errors import is_cuda_failure, is_out_of_memory

from .flow_batch import flow_steps, frames_of, works_needing_flow
from .flow_cache import FlowCache
from .flow_stream import cacheable, drop_state, flow_cached_steps, geometry_of
from .job import ChunkWork, Segment, SynthesisJob
from .limits import PolicyLimits
from .request import AudioChunk

JOIN, DECODE, AUDIO = "join", "decode", "audio"


@dataclass
class Outcome:
    """What one stage produced: audio chunks (in order per job) and the jobs that failed."""

    chunks: list[tuple[SynthesisJob, AudioChunk]] = field(default_factory=list)
    failed: list[tuple[SynthesisJob, BaseException]] = field(default_factory=list)

    def extend(self, other: "Outcome") -> None:
        self.chunks.extend(other.chunks)
        self.failed.extend(other.failed)


@dataclass(eq=False)
class _Solve:
    """A flow solve in flight: its works, its step generator (`flow_steps`/`flow_cached_steps`)."""

    works: list[ChunkWork]
    steps: object
    cached: bool


class BatchStats:
    """Decode batch sizes: now, the mean over the last `window_s` seconds, the maximum."""

    def __init__(self, window_s: float = 60.0):
        self.window_s = window_s
        self.current = 0
        self.max = 0
        self._recent: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()  # the worker's heartbeat thread reads the report

    def record(self, n: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self.current = n
            self.max = max(self.max, n)
            self._recent.append((now, n))
            while self._recent and self._recent[0][0] < now - self.window_s:
                self._recent.popleft()

    def idle(self) -> None:
        """Nothing decodes now."""
        self.current = 0

    def report(self) -> dict:
        with self._lock:
            mean = sum(n for _, n in self._recent) / len(self._recent) if self._recent else 0.0
            return {"current": self.current, "mean": round(mean, 2), "max": self.max}


class BatchEngine:
    """model: a loaded `CosyVoice3`; rows / max_len: the token batch (segments decoding at once,
    cache positions per segment); hook: see the module docstring."""

    def __init__(self, model, rows: int, max_len: int, hook: Callable[[SynthesisJob, str], None] | None = None,
                 flow_cache_bytes: int | None = None, prefix_cache_bytes: int | None = None):
        """flow_cache_bytes: the flow cache's budget (None: `default_flow_cache_bytes`, 0: off);
        prefix_cache_bytes: the LLM's prompt prefixes kept between joins (None: `PolicyLimits`'
        default, 0: off)."""
        self.model = model
        if prefix_cache_bytes is None:
            prefix_cache_bytes = PolicyLimits.prefix_cache_mb << 20
        self.tokens = TokenBatch(model.llm, model.config.llm, rows, max_len, steps=model.backends.decode_steps,
                                 prefixes=PrefixStore(prefix_cache_bytes))
        self.jobs: list[SynthesisJob] = []
        self.hook = hook or (lambda job, stage: None)
        self.batch_stats = BatchStats()
        self.stage_s = {"join": 0.0, "decode": 0.0, "flow": 0.0, "vocoder": 0.0}  # wall seconds spent in each
        self.chunk_estimator = model.backends.chunk_estimator or TorchChunkEstimator(model.flow.estimator)
        self.flow_geometry = geometry_of(model.flow, self.chunk_estimator)
        budget = default_flow_cache_bytes(model.device) if flow_cache_bytes is None else flow_cache_bytes
        self.flow_cache = FlowCache(budget)
        self._model_tag = f"{getattr(model, 'model_dir', '')}|{self.chunk_estimator.dtype}"
        self._stateful: set[Segment] = set()  # segments holding a flow cache state
        self._solves: list[_Solve] = []  # flow solves in flight, oldest first

    # ------------------------------------------------------------------ jobs

    def add(self, job: SynthesisJob) -> None:
        self.jobs.append(job)

    def remove(self, job: SynthesisJob) -> None:
        """Forget a job (done, failed or cancelled): its row and flow cache state are freed at once."""
        for seg in [s for s in self._stateful if s.job is job]:
            self._forget_state(seg)
        if job.decoding is not None and job.decoding in self.tokens:
            self.tokens.leave(job.decoding)
        job.decoding = job.joining = None
        job.pending.clear()
        if job in self.jobs:
            self.jobs.remove(job)

    def cancel(self, job: SynthesisJob) -> None:
        job.cancelled = True
        self.remove(job)

    # ------------------------------------------------------------------ what can be done

    def joinable(self) -> list[Segment]:
        """Segments waiting for a row, oldest job first."""
        return [j.joining for j in self.jobs if j.joining is not None and not j.done]

    @property
    def decoding(self) -> int:
        return self.tokens.active

    def tokens_to_first_chunk(self) -> list[int]:
        """For every decoding streaming segment that has made no chunk yet: the tokens it still
        needs before its first chunk can be made."""
        out = []
        for seg in self.tokens.owners:
            sched = seg.schedule
            if sched is not None and sched.chunks_done == 0 and seg.job.first_audio_at is None:
                out.append(sched.next_hop + sched.lookahead - len(seg.tokens))
        return out

    def solve_frames(self, work: ChunkWork) -> int:
        """Mel frames the flow solves for a work: every frame of prompt + tokens, or, on the cached
        path, those after its segment's cached frames (or its voice's prompt frames)."""
        ratio = self.model.config.flow.token_mel_ratio
        total = frames_of(work, ratio, LOOKAHEAD)
        if not (self.flow_cache.enabled and cacheable(work)):
            return total
        state = work.segment.flow_state
        if state is not None:
            return total - state.frames
        entry = self.flow_cache.voices.get(work.job.voice_key(self._model_tag))
        return total - (entry.frames if entry is not None else 0)

    def ready_works(self) -> list[ChunkWork]:
        """The next chunk work of every job (works of one job are done in order), unless its flow
        solve is in flight."""
        return [j.pending[0] for j in self.jobs if j.pending and not j.done and not self.in_flight(j.pending[0])]

    # ------------------------------------------------------------------ stages

    def join(self, segments: list[Segment]) -> Outcome:
        """Prefill `segments` (at most `tokens.free`) and take their first tokens."""
        t0 = time.perf_counter()
        try:
            return self._join(segments)
        finally:
            self.stage_s["join"] += time.perf_counter() - t0

    def _join(self, segments: list[Segment]) -> Outcome:
        out = Outcome()
        ok = []
        for seg in segments:
            try:
                self.hook(seg.job, JOIN)
                self.tokens.check(seg.spec)
                ok.append(seg)
            except Exception as exc:  # noqa: BLE001 - one request's problem
                self._own_failure(seg.job, exc, out)
        self._split(ok, self._join_now, out)
        return out

    def _join_now(self, segments: list[Segment]) -> None:
        events = self.tokens.join([(seg, seg.spec) for seg in segments])
        for seg in segments:
            seg.job.joined(seg)
        self._deliver_tokens(events)

    def decode(self, steps: int = 1) -> Outcome:
        """`steps` tokens for every decoding segment (`TokenBatch.step`: read back once)."""
        t0 = time.perf_counter()
        try:
            return self._decode(steps)
        finally:
            self.stage_s["decode"] += time.perf_counter() - t0

    def _decode(self, steps: int) -> Outcome:
        out = Outcome()
        owners = self.tokens.owners
        if not owners:
            self.batch_stats.idle()
            return out
        try:
            for seg in owners:
                self.hook(seg.job, DECODE)
            events = self.tokens.step(steps)
        except Exception as exc:  # noqa: BLE001 - sorted in _decode_in_parts
            if is_cuda_failure(exc) and not is_out_of_memory(exc):
                raise
            events = self._decode_in_parts(owners, out)
        self.batch_stats.record(len(owners))
        self._deliver_tokens(events)
        return out

    def _decode_in_parts(self, owners: list[Segment], out: Outcome):
        """A batched step failed: step the rows in halves (eagerly), down to single rows; rows that
        still fail leave, their jobs failed. The failed step changed no state (its K/V writes are
        rewritten the same), so the retry is the same step."""
        _free_memory()
        batch = self.tokens
        chosen: list[int | None] = [None] * len(owners)
        failed = []
        stack = [(0, len(owners))]
        while stack:
            start, stop = stack.pop()
            try:
                for seg in owners[start:stop]:
                    self.hook(seg.job, DECODE)
                with torch.inference_mode():
                    tokens = decode_rows(batch.lm, batch.cache, batch.state, start, stop,
                                         batch.slots_needed(start, stop), batch.config.sampling).tolist()
                chosen[start:stop] = tokens
            except Exception as err:  # noqa: BLE001
                if is_cuda_failure(err) and not is_out_of_memory(err):
                    raise
                _free_memory()
                if stop - start == 1:
                    failed.append((owners[start], err))
                else:
                    mid = (start + stop) // 2
                    stack += [(mid, stop), (start, mid)]
        events = batch.accept(chosen)
        for seg, err in failed:
            self._fail(seg.job, err, out)
        return events

    def _deliver_tokens(self, events) -> None:
        for ev in events:
            seg: Segment = ev.owner
            if seg.job.done:
                continue
            seg.job.on_tokens(seg, ev.emitted, ev.finished)

    def start_audio(self, works: list[ChunkWork]) -> Outcome:
        """Start the flow solves of `works` (batched by kind and length); works with nothing to
        solve get their chunk now. Their chunks come from `step_audio` as their solves end."""
        out = Outcome()
        ok = []
        for w in works:
            try:
                self.hook(w.job, AUDIO)
                ok.append(w)
            except Exception as exc:  # noqa: BLE001
                self._own_failure(w.job, exc, out)
        model = self.model
        ratio = model.config.flow.token_mel_ratio
        with_flow = works_needing_flow(ok, ratio)
        for w in ok:
            if w.final:  # final chunks attend to every frame: nothing cached serves them
                self._forget_state(w.segment)
        cached, plain = [], []
        for w in with_flow:
            (cached if self.flow_cache.enabled and cacheable(w) else plain).append(w)
        for group in by_length(cached, lambda w: frames_of(w, ratio, LOOKAHEAD)):
            for part in self._cache_parts(group):
                self._start_solve(part, cached=True)
        for group in by_length(plain, lambda w: frames_of(w, ratio, LOOKAHEAD)):
            self._start_solve(group, cached=False)
        self._vocode([(w, None) for w in ok if w not in with_flow], out)
        return out

    @property
    def solving(self) -> int:
        """Flow solves in flight."""
        return len(self._solves)

    def in_flight(self, work: ChunkWork) -> bool:
        return any(work in s.works for s in self._solves)

    def step_audio(self, to_end: bool = False) -> Outcome:
        """One ODE step of every flow solve in flight (every step to the end with `to_end`); the
        works of solves that end go through the vocoder (one batch) and give their chunks."""
        out = Outcome()
        t0 = time.perf_counter()
        done: list[tuple[ChunkWork, torch.Tensor | None]] = []
        for solve in list(self._solves):
            try:
                with torch.inference_mode():
                    while True:
                        next(solve.steps)
                        if not to_end:
                            break
            except StopIteration as end:
                self._solves.remove(solve)
                done.extend(self._solved(solve, end.value))
            except Exception as exc:  # noqa: BLE001 - sorted in _solve_failed
                self._solves.remove(solve)
                self._solve_failed(solve, exc, out)
        _sync(self.model.device)
        t1 = time.perf_counter()
        self.stage_s["flow"] += t1 - t0
        self._vocode([(w, m) for w, m in done if not w.job.done], out)
        return out

    def _start_solve(self, works: list[ChunkWork], cached: bool) -> None:
        model = self.model
        if cached:
            steps = flow_cached_steps(model.flow, model.noise, works, self.chunk_estimator, self.flow_geometry,
                                      self.flow_cache, self._model_tag, keep=lambda w: not w.job.done)
        else:
            steps = flow_steps(model.flow, model.noise, works, model.backends.estimator)
        self._solves.append(_Solve(works, steps, cached))

    def _solved(self, solve: "_Solve", value) -> list[tuple[ChunkWork, torch.Tensor | None]]:
        """The works of an ended solve with their new mel (a cached solve's works without room
        start again on the recompute path)."""
        if not solve.cached:
            return list(zip(solve.works, value))
        mel, no_room = value
        for w in solve.works:
            if id(w) in mel:
                self._stateful.add(w.segment)
        if no_room:
            self._start_solve(no_room, cached=False)
        return [(w, mel[id(w)]) for w in solve.works if id(w) in mel]

    def _solve_failed(self, solve: "_Solve", exc: BaseException, out: Outcome) -> None:
        """A cached solve out of memory: its works' caches and the unused voices go, the works
        solve again on the recompute path. Any other failure of a solve of several works: each
        half again; a single work's failure fails its job. A CUDA error other than out of memory
        is the process's."""
        if is_cuda_failure(exc) and not is_out_of_memory(exc):
            raise exc
        works = [w for w in solve.works if not w.job.done]
        if is_out_of_memory(exc):
            _free_memory()
            if solve.cached:
                for w in solve.works:
                    self._forget_state(w.segment, for_good=True)
                self.flow_cache.drop_voices()
                self.flow_cache.stats.dropped += len(solve.works)
                if works:
                    self._start_solve(works, cached=False)
                return
        if len(works) > 1:
            mid = len(works) // 2
            self._start_solve(works[:mid], solve.cached)
            self._start_solve(works[mid:], solve.cached)
        elif works:
            self._fail(works[0].job, exc, out)

    def _vocode(self, works: list[tuple[ChunkWork, torch.Tensor | None]], out: Outcome) -> None:
        """The vocoder for works whose new mel is known (None: nothing new), batched; their chunks."""
        mel = {id(w): m for w, m in works}
        self._split([w for w, _ in works], lambda part: out.chunks.extend(self._vocode_now(part, mel)), out)

    def _vocode_now(self, works: list[ChunkWork], new_mel: dict) -> list[tuple[SynthesisJob, AudioChunk]]:
        """Nothing is kept before the batch succeeded, so a failed batch can be run again."""
        model = self.model
        t1 = time.perf_counter()
        parts = {id(w): w.job.new_mel_part(new_mel.get(id(w))) for w in works}
        inputs = [(w, w.job.vocoder_input(w, parts[id(w)])) for w in works]
        voiced = [(w, m) for w, m in inputs if m is not None and m.shape[-1] >= model.hift.withheld_frames(w.final)]
        wavs = {}
        frame = model.hift.upsample_factor * model.hift.hop_len

        def window(item):  # mel frames a windowed vocoder call computes for this work
            return item[1].shape[-1] - item[0].segment.samples_sent // frame

        for group in by_length(voiced, window, spread=1.5):
            speech, _ = model.hift.vocode([m for _, m in group], [w.final for w, _ in group], model.backends.vocoder,
                                          starts=[w.segment.samples_sent for w, _ in group])
            wavs.update({id(w): s for (w, _), s in zip(group, speech)})
        chunks = [(w.job, w.job.add_audio(w, parts[id(w)], wavs.get(id(w)))) for w in works]
        self.stage_s["vocoder"] += time.perf_counter() - t1
        return chunks

    # ------------------------------------------------------------------ the flow cache

    def _cache_parts(self, works: list[ChunkWork]) -> list[list[ChunkWork]]:
        """Works in solves whose gathered cache (every row padded to the longest) stays within
        `CACHE_GATHER_BYTES`."""
        per_frame = self.flow_geometry.step_frame_bytes
        parts: list[list[ChunkWork]] = []
        for w in works:
            frames = frames_of(w, self.model.config.flow.token_mel_ratio, LOOKAHEAD)
            if parts and (len(parts[-1]) + 1) * frames * per_frame <= CACHE_GATHER_BYTES:
                parts[-1].append(w)
            else:
                parts.append([w])
        return parts

    def _forget_state(self, segment: Segment, for_good: bool = False) -> None:
        if for_good:
            drop_state(self.flow_cache, segment)
        else:
            self.flow_cache.free(segment.flow_state)
            segment.flow_state = None
        self._stateful.discard(segment)

    # ------------------------------------------------------------------ failures

    def _split(self, items: list, run: Callable[[list], None], out: Outcome) -> None:
        """Run `items` as one batch; on out-of-memory retry halves, down to single items; an item
        that fails alone fails its job. Other errors of a batch are isolated the same way."""
        stack = [items] if items else []
        while stack:
            part = stack.pop()
            try:
                run(part)
            except Exception as exc:  # noqa: BLE001 - sorted below
                if is_cuda_failure(exc) and not is_out_of_memory(exc):
                    raise
                if is_out_of_memory(exc):
                    _free_memory()
                if len(part) == 1:
                    self._fail(_job_of(part[0]), exc, out)
                else:
                    mid = len(part) // 2
                    stack += [part[mid:], part[:mid]]

    def _own_failure(self, job: SynthesisJob, exc: BaseException, out: Outcome) -> None:
        """A job's own error fails it; a CUDA error (not out-of-memory) is the process's."""
        if is_cuda_failure(exc) and not is_out_of_memory(exc):
            raise exc
        self._fail(job, exc, out)

    def _fail(self, job: SynthesisJob, exc: BaseException, out: Outcome) -> None:
        job.failed = True
        self.remove(job)
        out.failed.append((job, exc))


CACHE_GATHER_BYTES = 2 << 30  # a cached flow solve gathers at most this much of its rows' caches per ODE step


def default_flow_cache_bytes(device: torch.device) -> int:
    """The flow cache's budget when none is given: on a GPU what is free now less a tenth of the
    card (always left free) and room for the stages' own work (a tenth, at least 4 GiB); on the
    CPU a quarter of the available memory, at most 2 GiB."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return max(0, int(free - 0.1 * total - max(4 << 30, 0.1 * total)))
    import psutil

    return int(min(2 << 30, psutil.virtual_memory().available // 4))


def by_length(items: list, length: Callable, spread: float = 1.3) -> list[list]:
    """Items in groups of similar length (the longest at most `spread` times the shortest), so a
    padded batch does little work on padding."""
    groups: list[list] = []
    for item in sorted(items, key=length):
        if groups and length(item) <= spread * length(groups[-1][0]):
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _job_of(item) -> SynthesisJob:
    return item.job


def _free_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
