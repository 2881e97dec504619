"""The app-side keeper of the GPU worker process: start, watch, restart, retry. Never imports torch.

One reader thread waits on the worker's pipe and its process sentinel together
(`multiprocessing.connection.wait`) and, between messages, checks the clocks. Callers
(`submit`, `cancel`, `health`) only take the lock and put/read state.

Detects: the process exiting (sentinel); no heartbeat for `hang_timeout_s` ("hung"); a busy
worker whose step counter has not moved for `stall_timeout_s` ("stalled"); a `Poisoned` report
("oom" after a second out-of-memory in a row, "cuda_error"); RSS or GPU memory over a ceiling
("memory") and an optional request count ("recycled") - these two restart once the worker is
idle, holding new requests back meanwhile.

Acts: SIGTERM, then SIGKILL after `kill_grace_s`; a new worker after a backoff that doubles with
each crash in a row (the first restart is immediate). Every request the worker had started is
resubmitted with its attempt count raised, at most `max_attempts` starts in all: a streaming
request resumes at the first segment it has not fully delivered and skips the chunks of that
segment it has delivered (same seed, so the audio is the same). A worker that fails while booting
says `BootFailed`: state "boot_failed", no restart loop, requests answered with the error.

Bounds (checked before the worker sees a request): queue length -> `overloaded` at once; text
and prompt length, by the `Limits` the worker is booted with (`config.limits`) -> `too_long` /
`bad_input`; per-request deadline -> `timeout`.

Every submitted request ends with exactly one `Done` or `Failed` on its event queue.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait

from cosyvoice3.errors import BadInputError
from worker import main as worker_main
from worker.logs import WorkerLogListener
from worker.protocol import (
    BAD_INPUT,
    CANCELLED,
    INTERNAL,
    MODES,
    OOM,
    OVERLOADED,
    TIMEOUT,
    WORKER_CRASHED,
    WORKER_HUNG,
    BootFailed,
    Cancel,
    Chunk,
    Done,
    Failed,
    Heartbeat,
    Limits,
    Poisoned,
    PreparePrompt,
    Progress,
    PromptPrepared,
    Ready,
    Synthesize,
    Transcribe,
    Transcript,
    WorkerConfig,
)

log = logging.getLogger("worker.supervisor")

# Worker states (health's worker.state).
STARTING, LOADING, READY, RECOVERING, BOOT_FAILED, STOPPED = (
    "starting", "loading", "ready", "recovering", "boot_failed", "stopped")
# Restart causes (health's worker.last_restart_cause) and the code a request gets when its last
# attempt dies of that cause.
CAUSE_CODES = {"crashed": WORKER_CRASHED, "hung": WORKER_HUNG, "stalled": WORKER_HUNG, "oom": OOM,
               "cuda_error": WORKER_CRASHED, "boot_crashed": WORKER_CRASHED, "memory": WORKER_CRASHED,
               "recycled": WORKER_CRASHED}
PLANNED_CAUSES = ("memory", "recycled")


@dataclass
class SupervisorConfig:
    """worker: how to boot the worker. Times in seconds. `max_attempts`: starts of one request in
    a worker, first included. `max_queue`: unfinished requests admitted at once. `rss_limit` /
    `gpu_limit` (bytes) and `recycle_after` (requests) restart an idle worker; None = off.
    `boot_timeout_s`: a boot that takes longer is killed (None = wait; engine builds take minutes).
    `max_boot_crashes`: boots in a row that die without a word before the state is boot_failed."""

    worker: WorkerConfig = field(default_factory=WorkerConfig)
    hang_timeout_s: float = 30.0
    stall_timeout_s: float = 60.0
    boot_timeout_s: float | None = None
    kill_grace_s: float = 3.0
    max_attempts: int = 3
    max_queue: int = 64
    request_timeout_s: float = 600.0
    rss_limit: int | None = None
    gpu_limit: int | None = None
    recycle_after: int | None = None
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    max_boot_crashes: int = 3
    tick_s: float = 0.05

    @property
    def limits(self) -> Limits:
        """The request limits: the worker's own object, so admission and the model agree."""
        return self.worker.limits


@dataclass
class _Request:
    msg: Synthesize | PreparePrompt | Transcribe
    events: queue.SimpleQueue
    deadline: float
    attempt: int = 0
    started: bool = False  # the current attempt began in the worker
    sent: bool = False  # the current attempt is in the current worker's hands
    delivered: list = field(default_factory=list)  # (segment, segment_final) of chunks passed on


@dataclass
class _Worker:
    """One worker process incarnation."""

    process: multiprocessing.Process
    conn: object
    logs: WorkerLogListener
    started_at: float
    pid: int = 0
    ready_at: float | None = None
    last_heartbeat: float = 0.0
    last_progress: float = 0.0  # when the step counter last moved (or work began)
    steps: int = 0
    busy: tuple = ()
    rss: int = 0
    gpu_memory: int = 0
    batch: dict = field(default_factory=dict)
    served: int = 0
    pipe_open: bool = True
    boot_error: BootFailed | None = None
    stopping: str | None = None  # why we asked it to stop (a restart cause, "shutdown", "boot_failed")
    kill_at: float | None = None
    boot_timed_out: bool = False


class Supervisor:
    def __init__(self, config: SupervisorConfig):
        self.config = config
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.RLock()
        self._requests: dict[str, _Request] = {}
        self._worker: _Worker | None = None
        self._state = STOPPED
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._spawn_at: float | None = None
        self._planned: str | None = None
        self._crash_streak = 0
        self._boot_crashes = 0
        self._boot_error = ""
        self._info: dict = {}
        self._loading: dict = {}
        self._restarts = 0
        self._restart_causes: dict[str, int] = {}
        self._last_cause: str | None = None
        self._last_restart_at: float | None = None
        self._served = 0
        self._last_rtf: float | None = None

    # ------------------------------------------------------------------ public

    def start(self) -> None:
        """Start the worker and the reader thread; returns at once (see `wait_ready`)."""
        with self._lock:
            if self._thread is not None:
                return
            self._spawn()
            self._thread = threading.Thread(target=self._run, name="worker-supervisor", daemon=True)
            self._thread.start()
        atexit.register(self.stop)

    def stop(self, timeout: float = 5.0) -> None:
        """Answer every open request, stop the worker (SIGTERM, SIGKILL after the grace period)
        and the reader thread, within `timeout` seconds."""
        with self._lock:
            if self._stopping:
                thread = self._thread
            else:
                self._stopping = True
                self._spawn_at = None
                for req in list(self._requests.values()):
                    self._finish(req, Failed(req.msg.request_id, CANCELLED, "the app is shutting down"))
                if self._worker is not None:
                    self._terminate(self._worker, "shutdown", grace=min(self.config.kill_grace_s, timeout / 2))
                thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._lock:
            self._state = STOPPED
        atexit.unregister(self.stop)

    def submit(self, msg: Synthesize | PreparePrompt | Transcribe) -> queue.SimpleQueue:
        """Admit a request; returns the queue its events arrive on (ends with Done or Failed)."""
        events: queue.SimpleQueue = queue.SimpleQueue()
        rid = msg.request_id
        with self._lock:
            refusal = self._refusal(msg)
            if refusal is not None:
                events.put(Failed(rid, *refusal))
                return events
            timeout = msg.timeout_s or self.config.request_timeout_s
            req = _Request(msg, events, deadline=time.monotonic() + timeout)
            self._requests[rid] = req
            self._dispatch(req)
        return events

    def cancel(self, request_id: str) -> None:
        """Answer the request with Failed("cancelled") and stop its work in the worker."""
        with self._lock:
            req = self._requests.get(request_id)
            if req is None:
                return
            sent = req.sent
            self._finish(req, Failed(request_id, CANCELLED, "cancelled"))
            if sent:
                self._send(Cancel(request_id))

    @property
    def state(self) -> str:
        return self._state

    def health(self) -> dict:
        """Numbers for /health and the UI's status panel."""
        with self._lock:
            now = time.monotonic()
            w = self._worker
            busy = set(w.busy) if w else set()
            inflight = sum(1 for rid in list(self._requests) if rid in busy)
            status = {READY: "ok", STARTING: "starting", LOADING: "starting", RECOVERING: "recovering",
                      BOOT_FAILED: "error", STOPPED: "stopped"}[self._state]
            return {
                "status": status,
                "worker": {
                    "state": self._state,
                    "pid": w.pid if w else None,
                    "uptime_s": round(now - w.ready_at, 3) if w and w.ready_at else 0.0,
                    "restarts": self._restarts,
                    "last_restart_cause": self._last_cause,
                    "last_restart_age_s": round(now - self._last_restart_at, 3) if self._last_restart_at else None,
                    "restart_causes": dict(self._restart_causes),
                    "backends": self._info.get("backends", {}),
                    "device": self._info.get("device"),
                    "dtype": self._info.get("dtype"),
                    "demo": bool(self._info.get("demo")),
                    "demo_reason": self._info.get("demo_reason", ""),
                    "boot_error": self._boot_error or None,
                    "loading": dict(self._loading),
                    "heartbeat_age_s": round(now - w.last_heartbeat, 3) if w and w.last_heartbeat else None,
                    "steps": w.steps if w else 0,
                    "busy": sorted(busy),
                    "rss": w.rss if w else 0,
                    "gpu_memory": w.gpu_memory if w else 0,
                    "batch": {"current": 0, "mean": 0.0, "max": 0, **(w.batch if w else {})},
                },
                "queue_depth": len(self._requests) - inflight,
                "inflight": inflight,
                "max_queue": self.config.max_queue,
                "served": self._served,
                "last_rtf": self._last_rtf,
            }

    # ------------------------------------------------------------------ admission

    def _refusal(self, msg) -> tuple[str, str] | None:
        cfg = self.config
        if self._stopping:
            return INTERNAL, "the app is shutting down"
        if self._state == BOOT_FAILED:
            return INTERNAL, f"the model worker could not start: {self._boot_error}"
        if msg.request_id in self._requests:
            return BAD_INPUT, f"request id {msg.request_id!r} is already in use"
        if isinstance(msg, Synthesize):
            refusal = _limit_refusal(cfg.limits.check_text, msg.text)
            if refusal is not None:
                return refusal
            if msg.mode not in MODES:
                return BAD_INPUT, f"unknown mode {msg.mode!r}"
            if msg.prompt is None and msg.prompt_audio is None:
                return BAD_INPUT, "no voice prompt: give prompt audio or a saved voice"
            audio, rate = msg.prompt_audio, msg.prompt_sample_rate
        else:
            audio, rate = msg.audio, msg.sample_rate
        if audio is not None:
            if rate <= 0 or len(audio) == 0:
                return BAD_INPUT, "the prompt audio is empty"
            refusal = _limit_refusal(cfg.limits.check_prompt_seconds, len(audio) / rate)
            if refusal is not None:
                return refusal
        if len(self._requests) >= cfg.max_queue:
            return OVERLOADED, f"{cfg.max_queue} requests are already waiting; try again shortly"
        return None

    def _dispatch(self, req: _Request) -> None:
        """Hand the request's current attempt to the worker if it can take it now."""
        if req.sent or self._state != READY or self._planned:
            return
        msg = req.msg
        if isinstance(msg, Synthesize):
            start, skip = msg.start_segment, 0
            for segment, final in req.delivered:
                start, skip = (segment + 1, 0) if final else (start, skip + 1)
            msg = dataclasses.replace(msg, attempt=req.attempt, start_segment=start, skip_chunks=skip,
                                      first_seq=len(req.delivered))
        else:
            msg = dataclasses.replace(msg, attempt=req.attempt)
        req.sent = True
        self._send(msg)

    def _send(self, msg) -> None:
        w = self._worker
        if w is None or not w.pipe_open:
            return
        try:
            w.conn.send(msg)
        except OSError:  # it died; the sentinel says so next
            pass

    def _finish(self, req: _Request, event) -> None:
        self._requests.pop(req.msg.request_id, None)
        req.events.put(event)

    # ------------------------------------------------------------------ processes

    def _spawn(self) -> None:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        log_read, log_write = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(target=worker_main.run, args=(child_conn, log_write, self.config.worker),
                                    name="cosyfast-worker")
        listener = WorkerLogListener(log_read)
        listener.start()
        process.start()
        child_conn.close()  # our copies of the child's ends: without closing them EOF never comes
        log_write.close()
        now = time.monotonic()
        self._worker = _Worker(process, parent_conn, listener, started_at=now, pid=process.pid,
                               last_heartbeat=now, last_progress=now)
        self._state = STARTING
        self._spawn_at = None
        self._loading = {"stage": "starting", "fraction": 0.0, "message": "starting the worker process"}
        log.info("worker process %d started", process.pid)

    def _terminate(self, w: _Worker, cause: str, grace: float | None = None) -> None:
        if w.stopping is None:
            w.stopping = cause
            w.kill_at = time.monotonic() + (self.config.kill_grace_s if grace is None else grace)
            try:
                os.kill(w.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _reap(self, w: _Worker) -> int | None:
        w.process.join(timeout=1.0)
        exitcode = w.process.exitcode
        w.conn.close()
        w.logs.stop(timeout=1.0)
        if exitcode is not None:
            w.process.close()
        self._worker = None
        return exitcode

    # ------------------------------------------------------------------ reader thread

    def _run(self) -> None:
        while True:
            with self._lock:
                w = self._worker
                if w is None and self._stopping:
                    return
                handles = ([w.conn] if w is not None and w.pipe_open else []) + (
                    [w.process.sentinel] if w is not None else [])
            if handles:
                ready = wait(handles, timeout=self.config.tick_s)
            else:
                time.sleep(self.config.tick_s)
                ready = []
            if w is not None and w.conn in ready:
                self._read(w)
            if w is not None and w.process.sentinel in ready:
                with self._lock:
                    self._on_exit(w)
            with self._lock:
                self._tick()

    def _read(self, w: _Worker) -> None:
        try:
            while w.conn.poll():
                msg = w.conn.recv()
                with self._lock:
                    self._on_message(w, msg)
        except (EOFError, OSError):
            w.pipe_open = False

    def _on_message(self, w: _Worker, msg) -> None:
        now = time.monotonic()
        if isinstance(msg, Heartbeat):
            if msg.steps != w.steps or (msg.busy and not w.busy):
                w.last_progress = now
            w.last_heartbeat, w.steps, w.busy = now, msg.steps, tuple(msg.busy)
            w.rss, w.gpu_memory, w.batch = msg.rss, msg.gpu_memory, dict(msg.batch)
            for rid in msg.busy:
                if rid in self._requests and self._requests[rid].sent:
                    self._requests[rid].started = True
            return
        if isinstance(msg, Ready):
            self._on_ready(w, msg)
            return
        if isinstance(msg, BootFailed):
            w.boot_error = msg
            log.error("worker %d could not boot: %s", w.pid, msg.message)
            self._terminate(w, "boot_failed")
            return
        if isinstance(msg, Poisoned):
            log.error("worker %d is poisoned (%s): %s", w.pid, msg.cause, msg.message)
            if w.stopping is None:
                self._restart(msg.cause)
            return
        if isinstance(msg, Progress) and not msg.request_id:
            self._loading = {"stage": msg.stage, "fraction": msg.fraction, "message": msg.message}
            if self._state == STARTING:
                self._state = LOADING
            for req in list(self._requests.values()):
                if not req.sent:
                    req.events.put(Progress(req.msg.request_id, msg.stage, msg.fraction, msg.message))
            return
        if isinstance(msg, (Done, Failed)):
            w.busy = tuple(rid for rid in w.busy if rid != msg.request_id)
        req = self._requests.get(msg.request_id)
        if req is None or not req.sent:
            return  # answered already (cancel, deadline) or from an attempt given up on
        if isinstance(msg, Progress):
            req.started = True
            req.events.put(msg)
        elif isinstance(msg, Chunk):
            req.delivered.append((msg.segment, msg.segment_final))
            req.events.put(msg)
        elif isinstance(msg, (PromptPrepared, Transcript)):
            req.events.put(msg)
        elif isinstance(msg, Done):
            w.served += 1
            self._served += 1
            self._crash_streak = 0
            self._last_rtf = msg.stats.get("rtf", self._last_rtf)
            self._finish(req, msg)
        elif isinstance(msg, Failed):
            if msg.retryable and req.attempt + 1 < self.config.max_attempts:
                log.warning("request %s failed (%s), retrying: %s", msg.request_id, msg.code, msg.message)
                req.attempt += 1
                req.sent = req.started = False
                req.events.put(Progress(msg.request_id, "retrying", 0.0, msg.message))
                self._dispatch(req)
            else:
                self._finish(req, msg)

    def _on_ready(self, w: _Worker, msg: Ready) -> None:
        now = time.monotonic()
        w.ready_at = w.last_heartbeat = w.last_progress = now
        self._info = dict(msg.info)
        self._state = READY
        self._boot_crashes = 0
        self._loading = {"stage": "ready", "fraction": 1.0, "message": ""}
        log.info("worker %d ready (%s, demo=%s)", w.pid, msg.info.get("device"), bool(msg.info.get("demo")))
        for req in list(self._requests.values()):
            self._dispatch(req)

    def _on_exit(self, w: _Worker) -> None:
        while w.pipe_open:  # the last messages (Poisoned, BootFailed, ...) may still be in the pipe
            try:
                if not w.conn.poll():
                    break
                self._on_message(w, w.conn.recv())
            except (EOFError, OSError):
                w.pipe_open = False
        exitcode = self._reap(w)
        log.log(logging.INFO if w.stopping else logging.WARNING, "worker %d exited with code %s", w.pid, exitcode)
        if self._stopping:
            return
        if w.boot_error is not None:
            self._enter_boot_failed(w.boot_error.message)
        elif w.ready_at is None and w.stopping is None:
            self._boot_crashes += 1
            if self._boot_crashes >= self.config.max_boot_crashes:
                self._enter_boot_failed(f"the worker exited with code {exitcode} while booting, "
                                        f"{self._boot_crashes} times in a row")
            else:
                self._restart("boot_crashed", exitcode, w.pid)
        elif w.stopping is not None:
            self._schedule_spawn(planned=w.stopping in PLANNED_CAUSES)
        else:
            self._restart("crashed", exitcode, w.pid)

    def _enter_boot_failed(self, message: str) -> None:
        self._state = BOOT_FAILED
        self._boot_error = message
        for req in list(self._requests.values()):
            self._finish(req, Failed(req.msg.request_id, INTERNAL, f"the model worker could not start: {message}"))

    # ------------------------------------------------------------------ restarts

    def _restart(self, cause: str, exitcode: int | None = None, pid: int | None = None) -> None:
        """Count the restart, put the worker's requests back (or fail them at their last attempt),
        stop the worker if it still runs, and schedule the next one."""
        planned = cause in PLANNED_CAUSES
        self._restarts += 1
        self._restart_causes[cause] = self._restart_causes.get(cause, 0) + 1
        self._last_cause = cause
        self._last_restart_at = time.monotonic()
        self._state = RECOVERING
        self._planned = None
        w = self._worker
        pid = w.pid if w else pid
        how = f" (exit code {exitcode})" if exitcode is not None else ""
        log.warning("restarting the worker: %s%s, pid %s", cause, how, pid)
        for req in list(self._requests.values()):
            if not req.sent:
                continue
            req.sent = False
            if req.started:
                req.started = False
                req.attempt += 1
                if req.attempt >= self.config.max_attempts:
                    self._finish(req, Failed(req.msg.request_id, CAUSE_CODES.get(cause, WORKER_CRASHED),
                                             f"the model worker {_describe(cause)} {req.attempt} times while "
                                             f"working on this request{how}"))
                    continue
            req.events.put(Progress(req.msg.request_id, "recovering", 0.0,
                                    f"the model worker {_describe(cause)}; restarting it"))
        if not planned:
            self._crash_streak += 1
        if w is not None:
            self._terminate(w, cause)
        else:
            self._schedule_spawn(planned)

    def _schedule_spawn(self, planned: bool) -> None:
        streak = 0 if planned else self._crash_streak
        delay = 0.0 if streak <= 1 else min(self.config.backoff_max_s, self.config.backoff_s * 2 ** (streak - 2))
        self._state = RECOVERING
        self._spawn_at = time.monotonic() + delay

    def _tick(self) -> None:
        now = time.monotonic()
        cfg = self.config
        for req in list(self._requests.values()):
            if now > req.deadline:
                sent = req.sent
                self._finish(req, Failed(req.msg.request_id, TIMEOUT, "the request took longer than its deadline"))
                if sent:
                    self._send(Cancel(req.msg.request_id))
        w = self._worker
        if w is None:
            if self._spawn_at is not None and now >= self._spawn_at and not self._stopping:
                self._spawn()
            return
        if w.stopping is not None:
            if w.kill_at is not None and now >= w.kill_at:
                log.warning("worker %d did not stop within the grace period; SIGKILL", w.pid)
                w.kill_at = None
                try:
                    os.kill(w.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return
        if self._state in (STARTING, LOADING):
            if cfg.boot_timeout_s and now - w.started_at > cfg.boot_timeout_s and not w.boot_timed_out:
                log.error("worker %d did not boot within %.0f s; SIGKILL", w.pid, cfg.boot_timeout_s)
                w.boot_timed_out = True  # its exit counts as a boot crash
                os.kill(w.pid, signal.SIGKILL)
            return
        if self._state != READY:
            return
        if now - w.last_heartbeat > cfg.hang_timeout_s:
            log.error("worker %d sent no heartbeat for %.1f s", w.pid, now - w.last_heartbeat)
            self._restart("hung")
        elif w.busy and now - w.last_progress > cfg.stall_timeout_s:
            log.error("worker %d is busy but made no step for %.1f s", w.pid, now - w.last_progress)
            self._restart("stalled")
        else:
            if self._planned is None:
                if (cfg.rss_limit and w.rss > cfg.rss_limit) or (cfg.gpu_limit and w.gpu_memory > cfg.gpu_limit):
                    log.warning("worker %d uses too much memory (RSS %d MB, GPU %d MB); restarting when idle",
                                w.pid, w.rss >> 20, w.gpu_memory >> 20)
                    self._planned = "memory"
                elif cfg.recycle_after and w.served >= cfg.recycle_after:
                    self._planned = "recycled"
            if self._planned and not any(r.sent for r in list(self._requests.values())):
                self._restart(self._planned)


def _limit_refusal(check, value) -> tuple[str, str] | None:
    """(code, message) when `check(value)` (a `Limits` check) refuses the value."""
    try:
        check(value)
    except BadInputError as exc:
        return exc.code, str(exc)
    return None


def _describe(cause: str) -> str:
    return {"crashed": "crashed", "hung": "stopped responding", "stalled": "stopped making progress",
            "oom": "ran out of GPU memory", "cuda_error": "hit a CUDA error", "boot_crashed": "crashed while starting",
            "memory": "used too much memory", "recycled": "was recycled"}.get(cause, cause)
