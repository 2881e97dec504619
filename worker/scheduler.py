"""The worker's model loop: active requests, one step of each in turn, and their errors.

Process-free (it talks to the world through an inbox queue and a `send` callable), so it runs
in-process in tests. `run()` repeats: take new messages, then advance each active request by one
`step()` (round-robin, so concurrent users interleave), sending `Chunk`, `Progress`, `Done` and
`Failed` as it goes. At most `max_active` requests are stepped together; later ones wait in
arrival order.

Errors are sorted by what they poison:
- a request's own error (cosyvoice3 errors carry a protocol `code`; non-finite audio; any other
  exception) fails that request only;
- CUDA out-of-memory drops the request, frees what can be freed and answers `Failed(oom,
  retryable=True)`; a second one before any request completes means the process is not healthy;
- any other CUDA error ("illegal memory access", ...) leaves a CUDA context that is not trusted.
In the last two cases the scheduler sends `Poisoned`, stops and sets `poisoned` to the cause;
worker/main.py then exits and the supervisor restarts the process.
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from cosyvoice3.errors import BadInputError, CosyVoiceError
from worker.faults import FaultInjector
from worker.protocol import (
    CANCELLED,
    INTERNAL,
    OOM,
    Cancel,
    Chunk,
    Done,
    Failed,
    Poisoned,
    PreparePrompt,
    Progress,
    PromptPrepared,
    Shutdown,
    Synthesize,
    Transcribe,
)
from worker.transcription import Transcriber

log = logging.getLogger(__name__)

PROGRESS_EVERY = 0.1  # send synthesis progress when it moved by this much
CUDA_ERROR_MARKERS = ("CUDA error", "cudaError", "illegal memory access", "CUBLAS_STATUS", "cuDNN error",
                      "CUDNN_STATUS", "device-side assert", "unspecified launch failure")


def is_oom(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(exc)


def is_cuda_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    return type(exc).__name__ == "AcceleratorError" or any(m in text for m in CUDA_ERROR_MARKERS)


@dataclass
class _Active:
    """One request being worked on. `steps` counts its steps in this attempt (step 0 prepares
    the prompt and starts the job)."""

    msg: Synthesize | PreparePrompt | Transcribe
    job: Any = None
    steps: int = 0
    seq: int = 0
    skip: int = 0
    audio_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    reported_progress: float = 0.0


class Scheduler:
    """model: a loaded CosyVoice3 (pipeline API). request_type: its SynthesisRequest class.
    send: callable taking one protocol message (thread-safe). faults: a FaultInjector.
    inbox: where messages for the scheduler arrive (SimpleQueue: safe to fill from a signal handler).
    transcriber: answers `Transcribe` requests (worker/transcription.py); None: switched off."""

    def __init__(self, model, request_type: type, send: Callable[[Any], None],
                 faults: FaultInjector | None = None, max_active: int = 8, inbox: queue.SimpleQueue | None = None,
                 transcriber: Transcriber | None = None):
        self.model = model
        self.request_type = request_type
        self.send = send
        self.faults = faults or FaultInjector(enabled=False)
        self.max_active = max_active
        self.inbox = inbox if inbox is not None else queue.SimpleQueue()
        self.transcriber = transcriber or Transcriber(None, send, self.inbox.put)
        self.steps = 0  # advanced only by the model loop; heartbeats report it
        self.busy: tuple[str, ...] = ()
        self.poisoned: str | None = None
        self._active: dict[str, _Active] = {}
        self._waiting: dict[str, Synthesize | PreparePrompt | Transcribe] = {}
        self._oom_streak = 0
        self._stop = False

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        """Serve until `Shutdown` arrives or the process is poisoned."""
        while not self._stop:
            self._take_messages(block=not (self._active or self._waiting))
            self._admit()
            for request_id in list(self._active):
                self._take_messages(block=False)
                if self._stop:
                    break
                active = self._active.get(request_id)
                if active is not None:
                    self._step(active)
        for active in self._active.values():
            if active.job is not None:
                active.job.cancel()
        self._active.clear()
        self._waiting.clear()
        self.busy = ()

    def _take_messages(self, block: bool) -> None:
        while not self._stop:
            try:
                msg = self.inbox.get(block=block)
            except queue.Empty:
                return
            block = False
            if isinstance(msg, (Synthesize, PreparePrompt, Transcribe)):
                self._cancel(msg.request_id, answer=False)
                if isinstance(msg, Transcribe) and not self.transcriber.admit(msg):
                    continue  # parked until the recogniser is loaded; it comes back through the inbox
                self._waiting[msg.request_id] = msg
            elif isinstance(msg, Cancel):
                self._cancel(msg.request_id, answer=True)
            elif isinstance(msg, Shutdown):
                log.info("shutting down (%s)", msg.reason or "asked")
                self._stop = True
            else:
                log.warning("ignoring unexpected message %s", type(msg).__name__)

    def _admit(self) -> None:
        while self._waiting and len(self._active) < self.max_active:
            request_id = next(iter(self._waiting))
            msg = self._waiting.pop(request_id)
            self._active[request_id] = _Active(msg, seq=getattr(msg, "first_seq", 0),
                                               skip=getattr(msg, "skip_chunks", 0))
            self.send(Progress(request_id, "started", 0.0))
        self.busy = tuple(self._active)

    def _cancel(self, request_id: str, answer: bool) -> None:
        active = self._active.pop(request_id, None)
        waiting = self._waiting.pop(request_id, None) or self.transcriber.drop(request_id)
        if active is not None and active.job is not None:
            active.job.cancel()
        self.busy = tuple(self._active)
        if answer and (active or waiting):
            self.send(Failed(request_id, CANCELLED, "cancelled"))

    def _finish(self, active: _Active) -> None:
        self._active.pop(active.msg.request_id, None)
        self.busy = tuple(self._active)

    # ------------------------------------------------------------------ one step

    def _step(self, active: _Active) -> None:
        msg = active.msg
        try:
            self.faults.before_step(msg, active.steps)
            if isinstance(msg, PreparePrompt):
                self._prepare_prompt(active)
            elif isinstance(msg, Transcribe):
                self._finish(active)
                self.transcriber.step(msg)
            elif active.job is None:
                active.job = self._start_job(msg)
            else:
                self._advance(active)
        except Exception as exc:  # sorted by what it poisons; see the module docstring
            self._on_error(active, exc)
        finally:
            active.steps += 1
            self.steps += 1

    def _prepare_prompt(self, active: _Active) -> None:
        msg = active.msg
        prompt = self.model.prepare_prompt(msg.audio, msg.sample_rate, msg.text)
        self._finish(active)
        self.send(PromptPrepared(msg.request_id, prompt))
        self.send(Done(msg.request_id, {"elapsed_s": time.perf_counter() - active.started}))

    def _start_job(self, msg: Synthesize):
        prompt = msg.prompt
        if prompt is None:
            if msg.prompt_audio is None:
                raise BadInputError("no prompt: give prompt audio or a prepared voice")
            prompt = self.model.prepare_prompt(msg.prompt_audio, msg.prompt_sample_rate, msg.prompt_text)
        request = self.request_type(text=msg.text, prompt=prompt, mode=msg.mode, instruction=msg.instruction,
                                    seed=msg.seed, speed=msg.speed, stream=msg.stream,
                                    start_segment=msg.start_segment, forced_tokens=msg.forced_tokens)
        return self.model.start(request)

    def _advance(self, active: _Active) -> None:
        msg, job = active.msg, active.job
        for chunk in job.step():
            pcm = np.asarray(chunk.pcm, dtype=np.float32)
            if not np.isfinite(pcm).all():
                raise _NonFiniteAudio()
            if active.skip and chunk.segment == msg.start_segment:
                active.skip -= 1  # delivered before a restart
                continue
            active.audio_s += len(pcm) / chunk.sample_rate
            self.send(Chunk(msg.request_id, active.seq, pcm, chunk.sample_rate, chunk.segment, chunk.index,
                            chunk.segment_final))
            active.seq += 1
        if job.done:
            self._finish(active)
            self._oom_streak = 0
            elapsed = time.perf_counter() - active.started
            stats = dict(job.stats, elapsed_s=elapsed, audio_s=active.audio_s, attempt=msg.attempt,
                         pid=os.getpid(), rtf=elapsed / active.audio_s if active.audio_s else None)
            self.send(Done(msg.request_id, stats))
        elif job.progress >= active.reported_progress + PROGRESS_EVERY:
            active.reported_progress = job.progress
            self.send(Progress(msg.request_id, "synthesis", float(job.progress)))

    # ------------------------------------------------------------------ errors

    def _on_error(self, active: _Active, exc: Exception) -> None:
        request_id = active.msg.request_id
        self._cancel(request_id, answer=False)
        active.job = None
        if is_oom(exc):
            self._oom_streak += 1
            _free_memory()
            if self._oom_streak >= 2:
                self._poison("oom", f"out of memory twice in a row: {exc}")
            else:
                log.warning("request %s ran out of memory; freed caches, the process carries on", request_id)
                self.send(Failed(request_id, OOM, f"out of GPU memory: {exc}", retryable=True))
        elif is_cuda_error(exc):
            self._poison("cuda_error", f"{type(exc).__name__}: {exc}")
        elif isinstance(exc, _NonFiniteAudio):
            self.send(Failed(request_id, INTERNAL, str(exc)))
        elif isinstance(exc, CosyVoiceError):
            self.send(Failed(request_id, exc.code, str(exc)))
        else:
            log.exception("request %s failed", request_id)
            self.send(Failed(request_id, INTERNAL, f"{type(exc).__name__}: {exc}"))

    def _poison(self, cause: str, message: str) -> None:
        log.error("worker process poisoned (%s): %s", cause, message)
        self.poisoned = cause
        self._stop = True
        self.send(Poisoned(os.getpid(), cause, message))


class _NonFiniteAudio(Exception):
    def __init__(self):
        super().__init__("the model produced non-finite audio (NaN or Inf)")


def _free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
