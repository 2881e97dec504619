"""What the supervisor tells: worker states, the restart history, and the health report.

`report(...)` builds the dict that `GET /health` returns and the web UI's status panel reads; its
keys are a contract (webui/status.py, app.py). `status` is "ok" only while a worker is ready.
`combined(...)` is the same report over the several workers of a router: `workers` lists each
worker's entry, `worker` stays (the first one), and `status` is "ok" while any worker is ready
(`combined_state`). `WorkerLoad` is what a router compares to place a request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Worker states (health's worker.state).
STARTING, LOADING, READY, RECOVERING, BOOT_FAILED, STOPPED = (
    "starting", "loading", "ready", "recovering", "boot_failed", "stopped")
STATUS_OF_STATE = {READY: "ok", STARTING: "starting", LOADING: "starting", RECOVERING: "recovering",
                   BOOT_FAILED: "error", STOPPED: "stopped"}


# The state of several workers together, by precedence: any ready worker serves; else the one that
# will serve soonest; all failed to boot is an error; stopped only when every one has stopped.
_PRECEDENCE = (READY, RECOVERING, LOADING, STARTING, BOOT_FAILED, STOPPED)


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


def report(*, now: float, state: str, watched, restarts: RestartHistory, info: dict, loading: dict,
           boot_error: str, queue_depth: int, inflight: int, max_queue: int, served: int,
           last_rtf: float | None) -> dict:
    """The health dict. `watched`: the current worker's `Watched`, or None."""
    w = watched
    return {
        "status": STATUS_OF_STATE[state],
        "worker": {
            "state": state,
            "pid": w.pid if w else None,
            "uptime_s": round(now - w.ready_at, 3) if w and w.ready_at else 0.0,
            "restarts": restarts.count,
            "last_restart_cause": restarts.last_cause,
            "last_restart_age_s": round(now - restarts.last_at, 3) if restarts.last_at is not None else None,
            "restart_causes": dict(restarts.by_cause),
            "last_exit": restarts.last_exit,
            "backends": info.get("backends", {}),
            "device": info.get("device"),
            "dtype": info.get("dtype"),
            "demo": bool(info.get("demo")),
            "demo_reason": info.get("demo_reason", ""),
            "boot_error": boot_error or None,
            "loading": dict(loading),
            "heartbeat_age_s": round(now - w.last_heartbeat, 3) if w else None,
            "steps": w.steps if w else 0,
            "busy": sorted(w.busy) if w else [],
            "rss": w.rss if w else 0,
            "gpu_memory": w.gpu_memory if w else 0,
            "batch": {"current": 0, "mean": 0.0, "max": 0, **(w.batch if w else {})},
        },
        "queue_depth": queue_depth,
        "inflight": inflight,
        "max_queue": max_queue,
        "served": served,
        "last_rtf": last_rtf,
    }


def combined(reports: list[tuple[str, dict]], max_queue: int) -> dict:
    """The health dict of a router over several workers: `reports` are (name, report()) in the
    router's order. Each `workers` entry is a report's `worker` plus its name, queue depth,
    requests in flight and served count; `worker` is the first entry."""
    workers = [{"name": name, **r["worker"], "queue_depth": r["queue_depth"], "inflight": r["inflight"],
                "served": r["served"]} for name, r in reports]
    state = combined_state(w["state"] for w in workers)
    rtfs = [r["last_rtf"] for _, r in reports if r["last_rtf"] is not None]
    return {
        "status": STATUS_OF_STATE[state],
        "worker": workers[0] if workers else {},
        "workers": workers,
        "queue_depth": sum(r["queue_depth"] for _, r in reports),
        "inflight": sum(r["inflight"] for _, r in reports),
        "max_queue": max_queue,
        "served": sum(r["served"] for _, r in reports),
        "last_rtf": rtfs[0] if rtfs else None,
    }
