"""The Supervisor: one worker process under its own watch - its public face and its loop.

Threads. Callers (`submit`, `cancel`, `health`, `wait_for`) take the lock and touch the request
book. The worker process's own reader and writer threads (process.py) do every pipe read and
write. One loop thread (`_run`) takes what the reader posts from the inbox, hands each item to
`handle` (dispatch by message type), and runs `check` (the clocks) after every item and at least
every `tick_s`. Nothing under the lock and nothing on the loop thread reads or writes a pipe, so
a worker frozen at any point - even halfway through a message - cannot stop detection.

Detects (`check`, `handle`): the process exiting (its reader posts `Exited`); no heartbeat for
`hang_timeout_s` (HUNG); a busy worker whose step counter has not moved for `stall_timeout_s`
(STALLED); a `Poisoned` report (OUT_OF_MEMORY after a second out-of-memory in a row, CUDA_ERROR);
RSS or GPU memory over a ceiling (MEMORY) and an optional request budget (RECYCLED) - these two
restart once the worker is idle, holding new requests back meanwhile; a boot longer than
`boot_timeout_s`. The rules are in watch.py, the causes in causes.py.

Idle release (`idle_release_s`, off by default): a ready worker with no open request for that long
is stopped on purpose (SIGTERM: the worker's clean Shutdown; SIGKILL after `kill_grace_s`), which
frees its device. It is not a restart: no cause, no backoff, the restart history untouched. The
state is IDLE (health's status stays "ok"); the next request of any kind starts the worker again
(state WAKING, its boot progress in health's `loading`, and a `Progress("waking")` to each request
that waits for it). Requests that come while it stops or boots wait in the book, not refused; their
deadlines do not run during the wake-up (they move later by its length once the worker is ready).

Acts: SIGTERM, then SIGKILL after `kill_grace_s`; a new worker after the backoff of pacing.py.
Every request the worker had started is resubmitted to the next one with its attempt count
raised, at most `max_attempts` starts in all (book.py: attempts and the resume point). A worker
that fails while booting says `BootFailed`: state boot_failed, no restart loop, requests answered
with the error; one that dies while booting without a word is retried `max_boot_crashes` times.

Bounds (checked before the worker sees a request): queue length -> `overloaded` at once; text and
prompt length, by the `Limits` the worker is booted with (`config.limits`) -> `too_long` /
`bad_input`; per-request deadline -> `timeout`.

Every submitted request ends with exactly one `Done` or `Failed` on its event queue.

Beside others (a router, worker/router.py): `add_listener` is called after every step of the
loop; `accepting` says whether a request handed over now would go straight to a worker;
`release_waiting` and `adopt` move the requests no worker has from this supervisor's book to
another's (with their attempts and resume point); `submit(..., elsewhere=)` counts the requests
open in the other workers against the same queue bound; `load` is what the router compares.

`spawn_worker`, `handle` and `check` are the loop's steps: tests drive them directly with a fake
clock and fake worker processes (`clock=`, `launch=`), and the real loop in the same way.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from typing import Callable

from worker.protocol import (
    CANCELLED,
    INTERNAL,
    BootFailed,
    Cancel,
    Chunk,
    Done,
    Failed,
    Heartbeat,
    Poisoned,
    PreparePrompt,
    Progress,
    PromptPrepared,
    Ready,
    Synthesize,
    Transcribe,
    Transcript,
)
from worker.supervisor import watch
from worker.supervisor.book import Booking, RequestBook
from worker.supervisor.causes import BOOT_CRASHED, CRASHED, HUNG, MEMORY, cause
from worker.supervisor.config import SupervisorConfig
from worker.supervisor.health import (
    BOOT_FAILED,
    IDLE,
    LOADING,
    READY,
    RECOVERING,
    STARTING,
    STOPPED,
    WAKING,
    RestartHistory,
    WorkerLoad,
)
from worker.supervisor.pacing import RestartPacer
from worker.supervisor.process import Exited, WorkerProcess, explain_exit, memory_limit
from worker.supervisor.report import HealthReport, report
from worker.supervisor.watch import Watched

log = logging.getLogger("worker.supervisor")

# stop reasons that are not restart causes
SHUTDOWN, BOOT_FAILED_STOP, IDLE_RELEASE = "shutdown", "boot_failed", "idle_release"
WAKING_STAGE = "waking"  # the Progress stage of a request that waits for an idle worker to wake up
WAKING_WORDS = "the speech engine was idle and is starting again"
IDLE_LOADING = {"stage": "idle", "fraction": 1.0, "message": "released while idle; the next request starts it again"}


class Supervisor:
    """config: how to boot, watch and bound the worker. clock: monotonic seconds. launch:
    `launch(worker_config, post, name) -> WorkerProcess` (a fake one in tests). name: the
    worker process's name (one per supervisor when several run side by side)."""

    def __init__(self, config: SupervisorConfig, *, clock: Callable[[], float] = time.monotonic,
                 launch: Callable = WorkerProcess.launch, name: str = "cosyfast-worker"):
        self.config = config
        self._clock = clock
        self._launch = launch
        self._name = name
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()  # (worker process, message or Exited)
        self._book = RequestBook(config.max_attempts)
        self._pacer = RestartPacer(config.backoff_s, config.backoff_max_s, config.max_boot_crashes)
        self._restarts = RestartHistory()
        self._memory_limit = memory_limit()
        self._worker: Watched | None = None
        self._state = STOPPED
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._spawn_at: float | None = None
        self._planned: str | None = None  # a planned restart waiting for the worker to be idle
        self._wake_asked: float | None = None  # when a request came for a worker released while idle
        self._boot_error = ""
        self._info: dict = {}
        self._loading: dict = {}
        self._served = 0
        self._last_rtf: float | None = None
        self._went_round: float | None = None  # when the loop last finished a round (clock time)
        self._listeners: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ public

    def start(self) -> None:
        """Start the worker and the loop thread; returns at once (see `wait_for`)."""
        with self._lock:
            if self._thread is not None:
                return
            self.spawn_worker()
            self._thread = threading.Thread(target=self._run, name=f"{self._name}-supervisor", daemon=True)
            self._thread.start()
        atexit.register(self.stop)

    def stop(self, timeout: float = 5.0) -> None:
        """Answer every open request, stop the worker (SIGTERM, SIGKILL after the grace period)
        and the loop thread, within `timeout` seconds."""
        with self._lock:
            if not self._stopping:
                self._stopping = True
                self._spawn_at = None
                self._book.fail_all(CANCELLED, "the app is shutting down")
                if self._worker is not None:
                    self._stop_worker(SHUTDOWN, grace_s=min(self.config.kill_grace_s, timeout / 2))
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._lock:
            self._state = STOPPED
            self._changed.notify_all()
        atexit.unregister(self.stop)

    def submit(self, msg: Synthesize | PreparePrompt | Transcribe, *, elsewhere=()) -> queue.SimpleQueue:
        """Admit a request; returns the queue its events arrive on (ends with Done or Failed).
        `elsewhere`: ids of the requests open in the other workers of a router (one queue bound
        and one set of ids over them all)."""
        events: queue.SimpleQueue = queue.SimpleQueue()
        with self._lock:
            refusal = self._refusal(msg, elsewhere)
            if refusal is not None:
                events.put(Failed(msg.request_id, *refusal))
                return events
            booking = self._book.admit(msg, events, deadline=self._clock() + self.config.timeout_for(msg))
            self._wake_for(booking)
            self._dispatch(booking)
        return events

    def cancel(self, request_id: str) -> None:
        """Answer the request with Failed("cancelled") and stop its work in the worker."""
        with self._lock:
            booking = self._book.get(request_id)
            if booking is None:
                return
            holder = booking.holder
            self._book.finish(booking, Failed(request_id, CANCELLED, "cancelled"))
            if holder is not None:
                holder.send(Cancel(request_id))

    @property
    def state(self) -> str:
        return self._state

    @property
    def name(self) -> str:
        return self._name

    @property
    def accepting(self) -> bool:
        """A request handed over now goes straight to a ready worker (none booting, restarting,
        stopping or holding requests back for a planned restart)."""
        w = self._worker
        return (self._state == READY and w is not None and w.stop_reason is None and not self._planned
                and not self._stopping)

    def load(self) -> WorkerLoad:
        """What a router compares: state, open requests, free rows of the token batch, served."""
        with self._lock:
            w = self._worker
            rows = (self._info.get("batch") or {}).get("rows")
            current = int((w.batch if w else {}).get("current", 0))
            return WorkerLoad(name=self._name, state=self._state, accepting=self.accepting,
                              open=len(self._book), free_rows=None if rows is None else rows - current,
                              served=self._served)

    def open_ids(self) -> set[str]:
        """Ids of the requests admitted here and not yet answered."""
        with self._lock:
            return {b.request_id for b in self._book}

    def release_waiting(self) -> list[Booking]:
        """Unless this supervisor is accepting: take the requests no worker has out of its book,
        unanswered, for another supervisor to `adopt` (book.py: `release_waiting`)."""
        with self._lock:
            return [] if self.accepting else self._book.release_waiting()

    def adopt(self, booking: Booking) -> None:
        """Take over a request another supervisor released: it goes to this worker when it can
        take it (resumed at its resume point), or is answered at once when this one is stopping
        or failed to boot."""
        with self._lock:
            refusal = self._refusal(booking.msg, check_request=False)
            if refusal is not None:
                booking.events.put(Failed(booking.request_id, *refusal))
                return
            self._book.adopt(booking)
            self._wake_for(booking)
            self._dispatch(booking)

    def add_listener(self, listener: Callable[[], None]) -> None:
        """`listener()` is called from the loop thread after each of its steps (a message handled,
        the clocks checked), without the lock held; it must return at once."""
        self._listeners.append(listener)

    def health(self) -> dict:
        """Numbers for /health and the UI's status panel (report.py's shape, as a dict)."""
        return self.health_report().to_json()

    def health_report(self) -> HealthReport:
        with self._lock:
            w = self._worker
            busy = set(w.busy) if w else set()
            inflight = sum(1 for b in self._book if b.request_id in busy)
            return report(now=self._clock(), state=self._state, watched=w, restarts=self._restarts,
                          info=self._info, loading=self._loading, boot_error=self._boot_error,
                          queue_depth=len(self._book) - inflight, inflight=inflight,
                          max_queue=self.config.max_queue, served=self._served, last_rtf=self._last_rtf)

    def loop_age(self) -> float | None:
        """Seconds since the loop last finished a round (it goes round at least every `tick_s`);
        None before it started or once it has ended. Lock-free, so it answers even while the loop
        is stuck holding the lock: a replica's health check (ray_serve/) reads it."""
        went_round, thread = self._went_round, self._thread
        if went_round is None or thread is None or not thread.is_alive():
            return None
        return self._clock() - went_round

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` holds; it is evaluated under the lock each time the loop has
        handled something (and every `tick_s`). False on timeout."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        while True:
            try:
                item = self._inbox.get(timeout=self.config.tick_s)
            except queue.Empty:
                item = None
            with self._lock:
                if item is not None:
                    self.handle(*item)
                self.check()
                self._went_round = self._clock()
                self._changed.notify_all()
                done = self._stopping and self._worker is None
            for listener in self._listeners:
                listener()
            if done:
                return

    def _post(self, process, item) -> None:
        """Called by a worker process's reader thread: a message it read, or its `Exited`."""
        self._inbox.put((process, item))

    def spawn_worker(self, waking: bool = False) -> None:
        """Start a new worker process (it boots on its own and says Ready or BootFailed); `waking`:
        one released while idle, started again for a request."""
        self._spawn_at = None
        self._state = WAKING if waking else STARTING
        self._loading = {"stage": WAKING_STAGE if waking else "starting", "fraction": 0.0,
                         "message": f"{'waking up: ' if waking else ''}starting the worker process"}
        try:
            process = self._launch(self.config.worker, self._post, self._name)
        except Exception as exc:
            log.exception("could not start a worker process")
            self._boot_crashed(None, f"could not be started ({type(exc).__name__}: {exc})")
            return
        self._worker = Watched(process, started_at=self._clock())
        log.info("worker process %d started", process.pid)

    def handle(self, process, item) -> None:
        """One item from `process`: a protocol message, or its `Exited`. Items from a process that
        is no longer the current worker are ignored."""
        w = self._worker
        if w is None or w.process is not process:
            return
        self._note_active(w)
        if isinstance(item, Exited):
            self._on_exit(w, item.exitcode)
            return
        handler = self._HANDLERS.get(type(item))
        if handler is None:
            log.warning("ignoring an unexpected %s from worker %d", type(item).__name__, w.pid)
            return
        handler(self, w, item)

    def check(self) -> None:
        """The periodic checks: deadlines, the next spawn, SIGKILL after the grace period, boot
        time, hang and stall, planned restarts, idle release."""
        now, cfg = self._clock(), self.config
        # deadlines stand still while the requests wait for a worker released while idle
        for booking in self._book.expired(now if self._wake_asked is None else self._wake_asked):
            if booking.holder is not None:
                booking.holder.send(Cancel(booking.request_id))
        w = self._worker
        if w is None:
            if self._spawn_at is not None and now >= self._spawn_at and not self._stopping:
                self.spawn_worker()
            return
        self._note_active(w)
        if w.stop_reason is not None:
            if watch.kill_due(w, now):
                log.warning("worker %d did not stop within the grace period; SIGKILL", w.pid)
                w.kill_at = None
                w.process.kill()
            return
        if self._state in (STARTING, LOADING, WAKING):
            if watch.boot_overdue(w, now, cfg):
                log.error("worker %d did not boot within %.0f s; SIGKILL", w.pid, cfg.boot_timeout_s)
                w.boot_killed = True  # its exit counts as a boot crash
                w.process.kill()
            return
        if self._state != READY:
            return
        found = watch.fault(w, now, cfg)
        if found is not None:
            detail = (f"it sent no heartbeat for {now - w.last_heartbeat:.1f} s" if found == HUNG else
                      f"it was busy but made no step for {now - w.last_progress:.1f} s")
            log.error("worker %d: %s", w.pid, detail)
            self._restart(found, w, detail)
            return
        if self._planned is None:
            self._planned = watch.planned(w, cfg)
            if self._planned == MEMORY:
                log.warning("worker %d uses too much memory (RSS %d MB, GPU %d MB); restarting it when idle",
                            w.pid, w.rss >> 20, w.gpu_memory >> 20)
        if self._planned:
            if not self._book.held_by(w.process):
                self._restart(self._planned, w)
        elif not len(self._book) and watch.idle_due(w, now, cfg):
            self._release_idle(w, now)

    # ------------------------------------------------------------------ messages

    def _on_heartbeat(self, w: Watched, msg: Heartbeat) -> None:
        w.on_heartbeat(msg, self._clock())
        for request_id in msg.busy:
            booking = self._held(w, request_id)
            if booking is not None:
                booking.started = True

    def _on_ready(self, w: Watched, msg: Ready) -> None:
        if w.stop_reason is not None:
            return
        w.on_ready(self._clock())
        self._end_wake()
        self._info = dict(msg.info)
        self._state = READY
        self._pacer.booted()
        self._loading = {"stage": "ready", "fraction": 1.0, "message": ""}
        log.info("worker %d ready (%s, demo=%s)", w.pid, msg.info.get("device"), bool(msg.info.get("demo")))
        for booking in self._book.waiting():
            self._dispatch(booking)

    def _on_boot_failed(self, w: Watched, msg: BootFailed) -> None:
        w.boot_error = msg.message
        log.error("worker %d could not boot: %s", w.pid, msg.message)
        self._stop_worker(BOOT_FAILED_STOP)

    def _on_poisoned(self, w: Watched, msg: Poisoned) -> None:
        log.error("worker %d is poisoned (%s): %s", w.pid, msg.cause, msg.message)
        if w.stop_reason is None:
            self._restart(msg.cause, w, msg.message)

    def _on_progress(self, w: Watched, msg: Progress) -> None:
        if not msg.request_id:  # the worker's own: model download, loading, engine builds
            self._loading = {"stage": msg.stage, "fraction": msg.fraction, "message": msg.message}
            if self._state == STARTING:
                self._state = LOADING
            for booking in self._book.waiting():
                booking.events.put(Progress(booking.request_id, msg.stage, msg.fraction, msg.message))
            return
        booking = self._held(w, msg.request_id)
        if booking is not None:
            booking.started = True
            self._book.deliver(booking, msg)

    def _on_output(self, w: Watched, msg: Chunk | PromptPrepared | Transcript) -> None:
        booking = self._held(w, msg.request_id)
        if booking is not None:
            self._book.deliver(booking, msg)

    def _on_done(self, w: Watched, msg: Done) -> None:
        w.busy = tuple(rid for rid in w.busy if rid != msg.request_id)
        booking = self._held(w, msg.request_id)
        if booking is None:
            return
        w.served += 1
        self._served += 1
        self._pacer.served()
        self._last_rtf = msg.stats.get("rtf", self._last_rtf)
        self._book.finish(booking, Done(msg.request_id, {**msg.stats, "worker": self._served_by(w)}))

    def _served_by(self, w: Watched) -> dict:
        """Done's `worker`: which worker answered, on what device, precision and backends."""
        return {"name": self._name, "pid": w.pid, "device": self._info.get("device"),
                "dtype": self._info.get("dtype"), "backends": self._info.get("backends", {})}

    def _on_failed(self, w: Watched, msg: Failed) -> None:
        w.busy = tuple(rid for rid in w.busy if rid != msg.request_id)
        booking = self._held(w, msg.request_id)
        if booking is not None and self._book.retry(booking, msg):
            log.warning("request %s failed (%s), retrying: %s", msg.request_id, msg.code, msg.message)
            self._dispatch(booking)

    _HANDLERS = {Heartbeat: _on_heartbeat, Ready: _on_ready, BootFailed: _on_boot_failed, Poisoned: _on_poisoned,
                 Progress: _on_progress, Chunk: _on_output, PromptPrepared: _on_output, Transcript: _on_output,
                 Done: _on_done, Failed: _on_failed}

    def _on_exit(self, w: Watched, exitcode: int | None) -> None:
        why = explain_exit(exitcode, asked=w.stop_reason is not None or w.boot_killed, rss=w.rss,
                           limit=min(x for x in (self.config.rss_limit, self._memory_limit) if x))
        released = w.stop_reason == IDLE_RELEASE
        if not released:  # last_exit belongs to the restart history, which an idle release is not part of
            self._restarts.last_exit = why
        self._worker = None
        log.log(logging.INFO if w.stop_reason else logging.WARNING, "worker %d %s%s", w.pid, why,
                " (released while idle)" if released else "")
        if self._stopping:
            return
        if released:
            if len(self._book):  # requests came while it was stopping
                self.spawn_worker(waking=True)
            else:  # none, or they were cancelled or moved to another worker meanwhile
                self._wake_asked = None
        elif w.boot_error is not None:
            self._enter_boot_failed(w.boot_error)
        elif w.ready_at is None and w.stop_reason is None:
            self._boot_crashed(w, why)
        elif w.stop_reason is not None:
            self._schedule_spawn(planned=cause(w.stop_reason).planned)
        else:
            self._restart(CRASHED, w, f"it {why}")

    # ------------------------------------------------------------------ requests

    def _refusal(self, msg, elsewhere=(), check_request: bool = True) -> tuple[str, str] | None:
        cfg = self.config
        if self._stopping:
            return INTERNAL, "the app is shutting down"
        if self._state == BOOT_FAILED:
            return INTERNAL, f"the model worker could not start: {self._boot_error}"
        if not check_request:
            return None
        return self._book.refusal(msg, limits=cfg.limits, max_queue=cfg.max_queue, elsewhere=elsewhere)

    def _dispatch(self, booking: Booking) -> None:
        """Hand the request's current attempt to the worker if it can take it now."""
        if booking.holder is not None or not self.accepting:
            return
        w = self._worker
        w.process.send(self._book.hand_to(booking, w.process))

    def _note_active(self, w: Watched) -> None:
        """The idle clock: the worker has work while a request is open or it says it is busy."""
        if len(self._book) or w.busy:
            w.note_active(self._clock())

    def _held(self, w: Watched, request_id: str) -> Booking | None:
        """The booking of `request_id` if `w` has its current attempt (else the message is stale)."""
        booking = self._book.get(request_id)
        return booking if booking is not None and booking.holder is w.process else None

    # ------------------------------------------------------------------ idle release

    def _release_idle(self, w: Watched, now: float) -> None:
        """Stop a worker that has had no request for `idle_release_s` (not a restart: see the
        module docstring)."""
        log.info("worker %d had no request for %.1f s: stopping it to free its device (idle release; the next "
                 "request starts it again)", w.pid, now - w.last_active)
        self._state = IDLE
        self._loading = dict(IDLE_LOADING)
        self._stop_worker(IDLE_RELEASE)

    def _wake_for(self, booking: Booking) -> None:
        """`booking` came while the worker is released or waking up: it waits (its deadline
        standing still) and is told so; the worker is started unless it is still stopping (its
        exit starts the next one) or already booting."""
        if self._state not in (IDLE, WAKING):
            return
        if self._wake_asked is None:
            self._wake_asked = self._clock()
        booking.events.put(Progress(booking.request_id, WAKING_STAGE, float(self._loading.get("fraction") or 0.0),
                                    WAKING_WORDS))
        if self._state == IDLE and self._worker is None:
            log.info("a request came for the worker released while idle: starting it again")
            self.spawn_worker(waking=True)

    def _end_wake(self) -> None:
        """The wake-up is over (the worker is ready, or its boot failed): the waiting requests'
        deadlines move later by the time they stood still."""
        if self._wake_asked is None:
            return
        waited = self._clock() - self._wake_asked
        self._wake_asked = None
        self._book.extend_deadlines(waited)
        log.info("requests waited %.1f s for the worker released while idle to wake up", waited)

    # ------------------------------------------------------------------ restarts

    def _restart(self, name: str, w: Watched | None, detail: str = "") -> None:
        """Count the restart, give the worker's requests back to the book (which fails those at
        their last attempt), stop the worker if it still runs, and schedule the next one."""
        c = cause(name)
        self._end_wake()
        self._restarts.note(c.name, self._clock())
        self._state = RECOVERING
        self._planned = None
        log.warning("restarting the worker: %s, pid %s%s", c.name, w.pid if w else None,
                    f" ({detail})" if detail else "")
        if w is not None:
            self._book.take_back(w.process, c, detail)
        if not c.planned:
            self._pacer.crashed()
        if w is not None and w is self._worker:
            self._stop_worker(c.name)
        else:
            self._schedule_spawn(c.planned)

    def _boot_crashed(self, w: Watched | None, why: str) -> None:
        if self._pacer.boot_crashed():
            self._enter_boot_failed(f"the worker {why} while booting, {self._pacer.boot_crashes} times in a row")
        else:
            self._restart(BOOT_CRASHED, w, f"it {why}")

    def _stop_worker(self, reason: str, grace_s: float | None = None) -> None:
        w = self._worker
        if w.ask_to_stop(reason, self._clock(), self.config.kill_grace_s if grace_s is None else grace_s):
            w.process.terminate()

    def _schedule_spawn(self, planned: bool) -> None:
        self._state = RECOVERING
        self._spawn_at = self._clock() + self._pacer.delay(planned)

    def _enter_boot_failed(self, message: str) -> None:
        self._end_wake()
        self._state = BOOT_FAILED
        self._boot_error = message
        self._book.fail_all(INTERNAL, f"the model worker could not start: {message}")
