"""What the supervisor tells: worker states, the restart history, and a router's view of a worker.

`STATUS_OF_STATE` is health's `status` of each state ("ok" while the worker is ready, and while it
is idle - released on purpose after `idle_release_s` without requests - or waking up from that:
a request is served after the wake-up, nothing is wrong);
`combined_state` is the state of a set of workers. The report itself (its shape, one
supervisor's, and several combined) is report.py's. `WorkerLoad` is what a router compares to
place a request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Worker states (health's worker.state). IDLE: the worker process was stopped on purpose after a
# while without requests (its device freed); WAKING: a request came and it is booting again.
STARTING, LOADING, READY, RECOVERING, BOOT_FAILED, STOPPED, IDLE, WAKING = (
    "starting", "loading", "ready", "recovering", "boot_failed", "stopped", "idle", "waking")
STATUS_OF_STATE = {READY: "ok", IDLE: "ok", WAKING: "ok", STARTING: "starting", LOADING: "starting",
                   RECOVERING: "recovering", BOOT_FAILED: "error", STOPPED: "stopped"}


# The state of several workers together, by precedence: any ready worker serves; else the one that
# will serve soonest (a healthy one waking up, or idle, before one recovering); all failed to boot
# is an error; stopped only when every one has stopped.
_PRECEDENCE = (READY, WAKING, IDLE, RECOVERING, LOADING, STARTING, BOOT_FAILED, STOPPED)


def combined_state(states) -> str:
    """The state of a set of workers: READY while any is ready (STOPPED for no workers)."""
    states = set(states)
    return next((s for s in _PRECEDENCE if s in states), STOPPED)


@dataclass(frozen=True)
class WorkerLoad:
    """One worker as a router sees it. open: its requests admitted and not answered; free_rows:
    token-batch rows its last heartbeat left free (None before it is ready); served: requests it
    answered with Done."""

    name: str
    state: str
    accepting: bool
    open: int
    free_rows: int | None
    served: int


@dataclass
class RestartHistory:
    """Restarts of the worker so far: how many, of which cause, the last one, the last exit."""

    count: int = 0
    by_cause: dict = field(default_factory=dict)
    last_cause: str | None = None
    last_at: float | None = None
    last_exit: str | None = None  # explain_exit() of the last worker that ended

    def note(self, cause: str, now: float) -> None:
        self.count += 1
        self.by_cause[cause] = self.by_cause.get(cause, 0) + 1
        self.last_cause, self.last_at = cause, now
