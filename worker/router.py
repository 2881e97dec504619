"""The router: several supervised workers (one per GPU, or N CPU workers) behind the face of one.

`Router(supervisors, max_queue)` offers what the web side uses of a `Supervisor` (`start`,
`stop`, `submit`, `cancel`, `health`, `state`, `wait_for`), so `WorkerClient(router)` serves the
page and the APIs unchanged. Each supervisor keeps its own worker process under its own watch
(crash, hang, stall, OOM, memory limits, restarts) and its own request book; the router owns only
where a request goes:

- placing: a new request goes to the least-loaded worker that is accepting (ready, not
  restarting, not holding requests back for a planned restart): fewest open requests, then most
  free token-batch rows by its last heartbeat, then fewest served (so an idle set takes turns).
  While none is accepting it waits in the least-loaded worker that is booting or recovering.
- admission over the whole set: one queue bound (`max_queue`) and one set of request ids across
  every worker's book (`Supervisor.submit(..., elsewhere=)`); the refusals are the book's own.
- moving: whenever a worker is not accepting (its process died, hung, stalled, was poisoned, or
  is being recycled), the requests its book holds without a worker - those it had in flight when
  it died included - move at once to the least-loaded accepting worker (`release_waiting` /
  `adopt`). A booking moves whole: its event queue, deadline, attempt count and the chunks
  already delivered, so the new worker resumes a stream at the book's resume point (same seed:
  the client gets no audio twice and none skipped) and a request still gets at most
  `max_attempts` starts and exactly one answer. With no other worker accepting, they wait for
  their own worker's restart, as with one worker.
- telling: `health()` is `supervisor.report.combined` over the workers with the router's one
  bound (`workers` lists each, `worker` is the first ready one, `status` is "ok" while any
  worker is ready): the same rule as the Ray Serve application's /health.

Threads: callers take the router's lock, then a supervisor's (never the other way round). Each
supervisor's loop calls the router's listener after every step without its lock held; the
listener only sets an event, and the router's own thread ("cosyfast-router") does the moving.
`cancel` takes no router lock (an event stream dropped by the garbage collector cancels from
whatever thread it runs on, maybe one holding a supervisor's lock): it notes the id, then
cancels it in every book; a move checks that note after adopting, so a request in transit
during the cancel is cancelled in its new book.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from typing import Callable

from worker.supervisor import BOOT_FAILED, STOPPED, Supervisor
from worker.supervisor.health import WorkerLoad, combined_state
from worker.supervisor.report import combined

log = logging.getLogger("worker.router")

CANCELS_KEPT = 4096  # recent cancelled ids a move checks (a move takes microseconds; ids are unique)


def placement_key(load: WorkerLoad) -> tuple:
    """Smaller is less loaded: open requests, then free rows (more is better), then served."""
    return load.open, -(load.free_rows or 0), load.served


class Router:
    """supervisors: started or not (`start` starts the rest), in a fixed order (/health's order;
    its `worker` is the first ready one). max_queue: requests admitted at once over all of them (None: the first
    supervisor's bound)."""

    def __init__(self, supervisors: list[Supervisor], max_queue: int | None = None):
        if not supervisors:
            raise ValueError("a router needs at least one supervisor")
        self.supervisors = list(supervisors)
        self.max_queue = max_queue if max_queue is not None else self.supervisors[0].config.max_queue
        self._changed = threading.Condition(threading.RLock())
        self._poked = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        self._cancelled_lock = threading.Lock()  # held for a dict operation only, never with another lock
        for supervisor in self.supervisors:
            supervisor.add_listener(self._poked.set)

    # ------------------------------------------------------------------ the Supervisor's face

    def start(self) -> None:
        """Start every supervisor (each its worker) and the router's thread; returns at once."""
        with self._changed:
            if self._thread is not None:
                return
            for supervisor in self.supervisors:
                supervisor.start()
            self._thread = threading.Thread(target=self._run, name="cosyfast-router", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every supervisor at once (each answers its open requests), then the router's thread."""
        with self._changed:
            self._stopping = True
        stoppers = [threading.Thread(target=s.stop, args=(timeout,), name=f"stop-{s.name}", daemon=True)
                    for s in self.supervisors]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join(timeout + 1.0)
        self._poked.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        with self._changed:
            self._changed.notify_all()

    def submit(self, msg) -> queue.SimpleQueue:
        """Admit a request to the least-loaded worker; returns its event queue (ends with Done or
        Failed), as `Supervisor.submit` does."""
        with self._changed:
            target = self._choose()
            elsewhere = set().union(*(s.open_ids() for s in self.supervisors if s is not target))
            return target.submit(msg, elsewhere=elsewhere)

    def cancel(self, request_id: str) -> None:
        with self._cancelled_lock:
            self._cancelled[request_id] = None
            while len(self._cancelled) > CANCELS_KEPT:
                self._cancelled.popitem(last=False)
        for supervisor in self.supervisors:
            supervisor.cancel(request_id)

    @property
    def state(self) -> str:
        """READY while any worker is; else the state of the worker that will serve soonest."""
        return combined_state(s.state for s in self.supervisors)

    def health(self) -> dict:
        with self._changed:
            return combined([(s.name, s.health_report()) for s in self.supervisors], self.max_queue).to_json()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` holds; evaluated under the router's lock each time a worker's
        loop has stepped. False on timeout."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    # ------------------------------------------------------------------ placing and moving

    def _choose(self, exclude: Supervisor | None = None, accepting_only: bool = False) -> Supervisor | None:
        """The least-loaded accepting worker; else (unless `accepting_only`) the least-loaded one
        that is booting or recovering; else the first (whose refusal then answers)."""
        loads = [(s, s.load()) for s in self.supervisors if s is not exclude]
        accepting = [(s, load) for s, load in loads if load.accepting]
        if accepting:
            return min(accepting, key=lambda pair: placement_key(pair[1]))[0]
        if accepting_only:
            return None
        alive = [(s, load) for s, load in loads if load.state not in (BOOT_FAILED, STOPPED)]
        if alive:
            return min(alive, key=lambda pair: placement_key(pair[1]))[0]
        return self.supervisors[0]

    def _run(self) -> None:
        while True:
            self._poked.wait()
            self._poked.clear()
            with self._changed:
                if not self._stopping:
                    self._move_waiting()
                self._changed.notify_all()
                if self._stopping:
                    return

    def _move_waiting(self) -> None:
        """Move the requests that wait in a worker that is not accepting to accepting ones."""
        for source in self.supervisors:
            if source.accepting or self._choose(exclude=source, accepting_only=True) is None:
                continue
            for booking in source.release_waiting():
                target = self._choose(exclude=source, accepting_only=True) or source
                target.adopt(booking)
                with self._cancelled_lock:
                    cancelled = booking.request_id in self._cancelled
                if cancelled:  # cancelled while it was in no book
                    target.cancel(booking.request_id)
                if target is not source:
                    log.info("request %s moved from %s (%s) to %s", booking.request_id, source.name, source.state,
                             target.name)
