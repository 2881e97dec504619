"""The worker's model loop: messages in, batched rounds of work, audio and answers out.

Process-free (it talks to the world through an inbox queue and a `send` callable), so it runs
in-process in tests. `run()` repeats: take new messages; start the requests that arrived
(prompt preparation, validation: a bad request fails alone, before any model work; the text read
into segments, a long one a block per turn between rounds, `cosyvoice3.frontend.text`); one round
of the engine (`cosyvoice3.synthesis`: join waiting segments, one batched decode step, a batch
of flow + vocoder work, as the policy chooses); send `Chunk`, `Progress`, `Done` and `Failed` as
they come. Every request in the engine advances together; when all rows are taken, new requests
wait (they never fail for lack of a row).

Errors are sorted by what they poison:
- a request's own error (cosyvoice3 errors carry a protocol `code`; non-finite audio; any other
  exception) fails that request only (the engine isolates it inside a batch);
- CUDA out-of-memory: the engine retries the stage on halves of its batch, down to single
  requests; a request that still does not fit fails with `oom`, retryable; a second round with
  out-of-memory failures before any request completes means the process is not healthy;
- any other CUDA error ("illegal memory access", ...) leaves a CUDA context that is not trusted.
In the last two cases the scheduler sends `Poisoned`, stops and sets `poisoned` to the cause;
worker/gpu/main.py then exits and the supervisor restarts the process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from cosyvoice3.errors import BadInputError, CosyVoiceError, is_cuda_failure, is_out_of_memory
from cosyvoice3.synthesis.job import SynthesisJob
from cosyvoice3.synthesis.limits import PolicyLimits
from cosyvoice3.synthesis.policy import Policy
from cosyvoice3.synthesis.request import SynthesisRequest
from worker.gpu.faults import FaultInjector
from worker.gpu.transcription import Transcriber
from worker.protocol import (CANCELLED, INTERNAL, OOM, Cancel, Chunk, Done, Failed, Poisoned, PreparePrompt,
                             Progress, PromptPrepared, Shutdown, Synthesize, Transcribe)

log = logging.getLogger("worker.scheduler")

PROGRESS_EVERY = 0.1  # send a request's progress (text read, synthesis) when it moved by this much
PROMPT_CACHE_SIZE = 32  # prepared prompts kept by content (the same voice sent again is not re-analysed)
PLAN_SLICE_S = 0.02  # text reading per planning request per loop turn, beyond its one block (a long text)

is_oom = is_out_of_memory  # the names the worker's tests and logs use


def is_cuda_error(exc: BaseException) -> bool:
    return is_cuda_failure(exc) and not is_out_of_memory(exc)


@dataclass
class _Active:
    """One request in this worker: its message, its job once started, what it has sent.
    `steps` counts the rounds it took part in, in this attempt (step 0 prepares the prompt and
    starts the job); a fault spec's "step" is one of these."""

    msg: Synthesize | PreparePrompt | Transcribe
    plan: tuple | None = None  # (request, checked spec, SegmentPlan) while its text is being read
    job: SynthesisJob | None = None
    steps: int = 0
    took_part: bool = False  # in the current round
    seq: int = 0
    skip: int = 0
    audio_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    reported_progress: float = 0.0


class Scheduler:
    """model: a loaded CosyVoice3. send: callable taking one protocol message (thread-safe).
    faults: a FaultInjector. rows / max_len: the engine's token batch (segments decoding at once,
    LLM positions per segment). policy: the round's limits. inbox: where messages for the
    scheduler arrive (SimpleQueue: safe to fill from a signal handler). transcriber: answers
    `Transcribe` requests (worker/gpu/transcription.py); None: switched off."""

    def __init__(self, model, send: Callable[[Any], None], faults: FaultInjector | None = None, rows: int = 8,
                 max_len: int = 4096, policy: PolicyLimits | None = None, inbox: queue.SimpleQueue | None = None,
                 transcriber: Transcriber | None = None):
        self.model = model
        self.send = send
        self.faults = faults or FaultInjector(enabled=False)
        self.inbox = inbox if inbox is not None else queue.SimpleQueue()
        self.transcriber = transcriber or Transcriber(None, send, self.inbox.put)
        policy = policy or PolicyLimits()
        cache_mb = policy.flow_cache_mb
        self.engine = model.engine(rows, max_len, hook=self._fault_point,
                                   flow_cache_bytes=None if cache_mb is None else cache_mb << 20,
                                   prefix_cache_bytes=policy.prefix_cache_mb << 20)
        self.policy = Policy(policy)
        self.steps = 0  # advanced only by the model loop; heartbeats report it
        self.busy: tuple[str, ...] = ()
        self.poisoned: str | None = None
        self._active: dict[str, _Active] = {}  # started (job in the engine), arrival order
        self._waiting: dict[str, Synthesize | PreparePrompt | Transcribe] = {}  # not started yet
        self._by_job: dict[int, _Active] = {}
        self._prompts: OrderedDict[str, Any] = OrderedDict()
        self._oom_streak = 0
        self._stop = False

    @property
    def batch(self) -> dict:
        """For the heartbeat: decode batch sizes {"current", "mean" (last minute), "max"}, and the
        seconds spent so far in each stage of the engine ("stage_s": join, decode, flow, vocoder), and
        the streaming flow cache ("flow_cache": budget, memory used, voices, hit rate...) and the
        LLM's prompt prefixes ("prefix_cache": budget, memory used, prompts, hit rate...)."""
        return {**self.engine.batch_stats.report(), "rounds": self.steps,
                "stage_s": {k: round(v, 3) for k, v in self.engine.stage_s.items()},
                "flow_cache": self.engine.flow_cache.report(),
                "prefix_cache": self.engine.tokens.prefixes.report()}

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        """Serve until `Shutdown` arrives or the process is poisoned."""
        while not self._stop:
            self._take_messages(block=not (self._active or self._waiting))
            if self._stop:
                break
            self._start_waiting()
            self._advance_plans()
            if self._stop or not self._active:
                continue
            self._round()
        for active in list(self._active.values()):
            if active.job is not None:
                self.engine.cancel(active.job)
        self._active.clear()
        self._waiting.clear()
        self.busy = ()

    def _take_messages(self, block: bool) -> None:
        while not self._stop:
            try:
                msg = self.inbox.get(block=block)
            except queue.Empty:
                break
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
        self.busy = tuple(self._active) + tuple(self._waiting)

    def _cancel(self, request_id: str, answer: bool) -> None:
        active = self._active.pop(request_id, None)
        waiting = self._waiting.pop(request_id, None) or self.transcriber.drop(request_id)
        if active is not None and active.job is not None:
            self._by_job.pop(id(active.job), None)
            self.engine.cancel(active.job)
        self.busy = tuple(self._active) + tuple(self._waiting)
        if answer and (active or waiting):
            self.send(Failed(request_id, CANCELLED, "cancelled"))

    def _finish(self, active: _Active) -> None:
        self._active.pop(active.msg.request_id, None)
        if active.job is not None:
            self._by_job.pop(id(active.job), None)
            self.engine.remove(active.job)
        self.busy = tuple(self._active) + tuple(self._waiting)

    # ------------------------------------------------------------------ starting requests

    def _start_waiting(self) -> None:
        """Prepare prompts and start the jobs of the requests that arrived (one at a time, taking
        messages in between, so a cancel or shutdown is seen at once)."""
        while self._waiting and not self._stop:
            request_id = next(iter(self._waiting))
            msg = self._waiting.pop(request_id)
            active = _Active(msg, seq=getattr(msg, "first_seq", 0), skip=getattr(msg, "skip_chunks", 0))
            self._active[request_id] = active
            self.send(Progress(request_id, "started", 0.0))
            try:  # PreparePrompt and Transcribe are answered here, in their one step
                self.faults.before_step(msg, 0)
                if isinstance(msg, PreparePrompt):
                    prompt = self._prepared(msg.audio, msg.sample_rate, msg.text)
                    self._finish(active)
                    self.send(PromptPrepared(request_id, prompt))
                    self.send(Done(request_id, {"elapsed_s": time.perf_counter() - active.started}))
                elif isinstance(msg, Transcribe):
                    self.transcriber.step(msg)  # raises before it answers: sorted by _on_error below
                    self._finish(active)
                else:
                    active.plan = self._plan(msg)
                    self._advance_plan(active)
            except Exception as exc:  # noqa: BLE001 - sorted by what it poisons
                self._on_error(active, exc)
            finally:
                active.steps = 1
                self.steps += 1
            self._take_messages(block=False)

    def _prepared(self, audio: np.ndarray, rate: int, text: str):
        """The prepared prompt of this audio and transcript (cached by content)."""
        key = hashlib.sha1(np.ascontiguousarray(audio, dtype=np.float32).tobytes()
                           + f"|{rate}|{text}".encode()).hexdigest()
        prompt = self._prompts.get(key)
        if prompt is None:
            prompt = self.model.prepare_prompt(audio, rate, text)
            self._prompts[key] = prompt
            while len(self._prompts) > PROMPT_CACHE_SIZE:
                self._prompts.popitem(last=False)
        else:
            self._prompts.move_to_end(key)
        return prompt

    def _plan(self, msg: Synthesize) -> tuple:
        """The request's prompt prepared, its spec checked (a bad request fails here, alone) and
        the plan of its text segments, not read yet."""
        prompt = msg.prompt
        if prompt is None:
            if msg.prompt_audio is None:
                raise BadInputError("no prompt: give prompt audio or a prepared voice")
            prompt = self._prepared(msg.prompt_audio, msg.prompt_sample_rate, "")  # the transcript: msg.spec's
        request = SynthesisRequest(msg.spec, prompt, msg.start_segment, msg.forced_tokens)
        return (request, *self.model.plan(request))

    def _advance_plans(self) -> None:
        """Read on in the texts still being planned (long texts: a block at a time, about
        PLAN_SLICE_S each per loop turn, so the requests in the engine wait that long at most)."""
        for active in [a for a in self._active.values() if a.plan is not None]:
            try:
                self._advance_plan(active)
            except Exception as exc:  # noqa: BLE001 - the request's own error (its text)
                self._on_error(active, exc)

    def _advance_plan(self, active: _Active) -> None:
        """Read one block of the request's text and more until PLAN_SLICE_S has passed; once the
        whole text is read, its job joins the engine (a short text: in its first turn)."""
        request, spec, plan = active.plan
        until = time.perf_counter() + PLAN_SLICE_S
        plan.step()
        while not plan.done and time.perf_counter() < until:
            plan.step()
        read, blocks = plan.progress
        if not plan.done and read / blocks >= active.reported_progress + PROGRESS_EVERY:
            active.reported_progress = read / blocks  # a long text: the page says how much is read
            self.send(Progress(active.msg.request_id, "reading", read / blocks, f"{read}/{blocks}"))
        if plan.done:
            active.plan, active.reported_progress = None, 0.0
            active.job = SynthesisJob(self.model, request, active.msg.request_id, planned=(spec, plan.finish()))
            self._by_job[id(active.job)] = active
            self.engine.add(active.job)

    # ------------------------------------------------------------------ one round

    def _round(self) -> None:
        try:
            outcome = self.policy.run_once(self.engine)
        except Exception as exc:  # noqa: BLE001 - only device failures come out of the engine
            self.steps += 1
            if is_cuda_error(exc):
                self._poison("cuda_error", f"{type(exc).__name__}: {exc}")
                return
            raise
        self.steps += 1
        for active in self._active.values():
            if active.took_part:
                active.steps += 1
                active.took_part = False
        for job, chunk in outcome.chunks:
            active = self._by_job.get(id(job))
            if active is not None:
                self._send_chunk(active, chunk)
        if any(is_oom(exc) for _, exc in outcome.failed) and self._note_oom():
            return
        for job, exc in outcome.failed:
            active = self._by_job.get(id(job))
            if active is not None:
                self._on_error(active, exc, counted=True)
        for active in list(self._active.values()):
            job = active.job
            if job is None or active.msg.request_id not in self._active:
                continue
            if job.done:
                self._complete(active)
            elif job.progress >= active.reported_progress + min(PROGRESS_EVERY, 1 / len(job.segments)):
                active.reported_progress = job.progress  # a long text: at least once a segment
                self.send(Progress(active.msg.request_id, "synthesis", float(job.progress), segments=len(job.segments)))

    def _send_chunk(self, active: _Active, chunk) -> None:
        msg = active.msg
        pcm = np.asarray(chunk.pcm, dtype=np.float32)
        if not np.isfinite(pcm).all():
            self._on_error(active, _NonFiniteAudio())
            return
        if active.skip and chunk.segment == msg.start_segment:
            active.skip -= 1  # delivered before a restart
            return
        active.audio_s += len(pcm) / chunk.sample_rate
        text = active.job.segments[chunk.segment] if chunk.index == 0 else ""  # once per segment, for captions
        self.send(Chunk(msg.request_id, active.seq, pcm, chunk.sample_rate, chunk.segment, chunk.index,
                        chunk.segment_final, text))
        active.seq += 1

    def _complete(self, active: _Active) -> None:
        msg, job = active.msg, active.job
        self._finish(active)
        self._oom_streak = 0
        elapsed = time.perf_counter() - active.started
        stats = dict(job.stats, elapsed_s=elapsed, audio_s=active.audio_s, attempt=msg.attempt, pid=os.getpid(),
                     rtf=elapsed / active.audio_s if active.audio_s else None)
        self.send(Done(msg.request_id, stats))

    def _fault_point(self, job: SynthesisJob, stage: str) -> None:
        """The engine's hook: a request's test-only fault fires at its chosen round."""
        active = self._by_job.get(id(job))
        if active is not None:
            active.took_part = True
            self.faults.before_step(active.msg, active.steps)

    # ------------------------------------------------------------------ errors

    def _note_oom(self) -> bool:
        """Count an out-of-memory event; True when it poisoned the process (a second one before
        any request completed)."""
        self._oom_streak += 1
        if self._oom_streak >= 2:
            self._poison("oom", "out of memory twice without a request completing in between")
            return True
        return False

    def _on_error(self, active: _Active, exc: BaseException, counted: bool = False) -> None:
        request_id = active.msg.request_id
        if request_id not in self._active:
            return
        self._cancel(request_id, answer=False)
        if is_oom(exc) and not counted and self._note_oom():
            return
        if is_oom(exc):
            log.warning("request %s ran out of memory; freed caches, the process carries on", request_id)
            self.send(Failed(request_id, OOM, f"out of GPU memory: {exc}", retryable=True))
        elif is_cuda_error(exc):
            self._poison("cuda_error", f"{type(exc).__name__}: {exc}")
        elif isinstance(exc, _NonFiniteAudio):
            self.send(Failed(request_id, INTERNAL, str(exc)))
        elif isinstance(exc, CosyVoiceError):
            self.send(Failed.of(request_id, exc))
        else:
            log.error("request %s failed", request_id, exc_info=exc)
            self.send(Failed(request_id, INTERNAL, f"{type(exc).__name__}: {exc}"))

    def _poison(self, cause: str, message: str) -> None:
        log.error("worker process poisoned (%s): %s", cause, message)
        self.poisoned = cause
        self._stop = True
        self.send(Poisoned(os.getpid(), cause, message))


class _NonFiniteAudio(Exception):
    def __init__(self):
        super().__init__("the model produced non-finite audio (NaN or Inf)")
