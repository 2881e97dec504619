"""The shape of `GET /health`, and the one rule that combines the reports of several workers.

`WorkerHealth` is one worker's entry (health's `worker`); `HealthReport` is a whole report
(`report(...)`: one supervisor's):
status, the worker, the queue numbers and, for a set of workers, `workers` (each `Member`: its
name, its entry and its own request counts). `to_json` gives the dict the API, the page's status
panel and the Ray replicas' posts carry; `from_json` reads one back, keeping keys it does not know
(`extra`: what a newer worker or heartbeat adds passes through unchanged).

`combined(reports, max_queue)` is the report of a set of workers, used by the router
(worker/router.py, the workers of one app) and by the Ray Serve application (ray_serve/board.py,
one worker per replica): `workers` lists every member in the given order; `worker` is the first
ready member, else the first (a placeholder that is starting, with `note`, when there is none);
`status` follows `combined_state` ("ok" while any member is ready, or idle or waking up from
an idle release with none ready); the queue numbers and
`served` add up; `max_queue` is the one bound over the set when there is one (a router admits by
one bound), else the sum of the members' own (replicas admit each by its own); `last_rtf` is the
first member's that has one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from worker.supervisor.health import READY, STARTING, STATUS_OF_STATE, combined_state

EMPTY_BATCH = {"current": 0, "mean": 0.0, "max": 0}
NO_WORKER = {"stage": "starting", "fraction": 0.0, "message": "waiting for a worker"}


def _known(cls) -> set[str]:
    return {f.name for f in fields(cls)} - {"extra"}


def _split(cls, data: dict) -> tuple[dict, dict]:
    known = _known(cls)
    return {k: v for k, v in data.items() if k in known}, {k: v for k, v in data.items() if k not in known}


@dataclass
class WorkerHealth:
    """One worker: its state, process, restarts (count, causes, the last one and how its process
    ended), what it runs (backends, device, dtype, demo), its boot, and what its last heartbeat
    said (steps, busy request ids, rss and GPU memory in bytes, the decode batch)."""

    state: str
    pid: int | None = None
    uptime_s: float = 0.0
    restarts: int = 0
    last_restart_cause: str | None = None
    last_restart_age_s: float | None = None
    restart_causes: dict = field(default_factory=dict)
    last_exit: str | None = None
    backends: dict = field(default_factory=dict)
    device: str | None = None
    dtype: str | None = None
    demo: bool = False
    demo_reason: str = ""
    boot_error: str | None = None
    loading: dict = field(default_factory=dict)
    heartbeat_age_s: float | None = None
    steps: int = 0
    busy: list = field(default_factory=list)
    rss: int = 0
    gpu_memory: int = 0
    batch: dict = field(default_factory=lambda: dict(EMPTY_BATCH))
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {**{name: getattr(self, name) for name in _known(WorkerHealth)}, **self.extra}

    @classmethod
    def from_json(cls, data: dict) -> "WorkerHealth":
        known, extra = _split(cls, data)
        return cls(**{"state": STARTING, **known}, extra=extra)


@dataclass
class Member:
    """One worker of a set: its name (a worker process's, or a Serve replica's id), its entry, and
    the requests it holds (waiting, in flight) and answered."""

    name: str
    worker: WorkerHealth
    queue_depth: int = 0
    inflight: int = 0
    served: int = 0

    def to_json(self) -> dict:
        return {"name": self.name, **self.worker.to_json(), "queue_depth": self.queue_depth,
                "inflight": self.inflight, "served": self.served}


@dataclass
class HealthReport:
    """A whole /health report; `workers` only for a set of workers (`combined`), `worker` then
    being one of them (with its name and counts)."""

    status: str
    worker: WorkerHealth | Member
    queue_depth: int = 0
    inflight: int = 0
    max_queue: int = 0
    served: int = 0
    last_rtf: float | None = None
    workers: list[Member] | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        data = {"status": self.status, "worker": self.worker.to_json(), "queue_depth": self.queue_depth,
                "inflight": self.inflight, "max_queue": self.max_queue, "served": self.served,
                "last_rtf": self.last_rtf}
        if self.workers is not None:
            data["workers"] = [m.to_json() for m in self.workers]
        return {**data, **self.extra}

    @classmethod
    def from_json(cls, data: dict) -> "HealthReport":
        """One worker's report (a supervisor's `health()`, as a Ray replica posts it)."""
        known, extra = _split(cls, data)
        known.pop("workers", None)
        worker = WorkerHealth.from_json(known.pop("worker", None) or {})
        return cls(**{"status": STATUS_OF_STATE[worker.state], **known, "worker": worker}, extra=extra)


def report(*, now: float, state: str, watched, restarts: RestartHistory, info: dict, loading: dict,
           boot_error: str, queue_depth: int, inflight: int, max_queue: int, served: int,
           last_rtf: float | None) -> HealthReport:
    """One supervisor's report. `watched`: the current worker's `Watched`, or None; `restarts`:
    its `RestartHistory`."""
    w = watched
    worker = WorkerHealth(
        state=state,
        pid=w.pid if w else None,
        uptime_s=round(now - w.ready_at, 3) if w and w.ready_at else 0.0,
        restarts=restarts.count,
        last_restart_cause=restarts.last_cause,
        last_restart_age_s=round(now - restarts.last_at, 3) if restarts.last_at is not None else None,
        restart_causes=dict(restarts.by_cause),
        last_exit=restarts.last_exit,
        backends=info.get("backends", {}),
        device=info.get("device"),
        dtype=info.get("dtype"),
        demo=bool(info.get("demo")),
        demo_reason=info.get("demo_reason", ""),
        boot_error=boot_error or None,
        loading=dict(loading),
        heartbeat_age_s=round(now - w.last_heartbeat, 3) if w else None,
        steps=w.steps if w else 0,
        busy=sorted(w.busy) if w else [],
        rss=w.rss if w else 0,
        gpu_memory=w.gpu_memory if w else 0,
        batch={**EMPTY_BATCH, **(w.batch if w else {})},
    )
    return HealthReport(STATUS_OF_STATE[state], worker, queue_depth=queue_depth, inflight=inflight,
                        max_queue=max_queue, served=served, last_rtf=last_rtf)


def combined(reports: list[tuple[str, HealthReport]], max_queue: int | None = None, note: str = "") -> HealthReport:
    """The report of a set of workers from each one's (name, report), by the rules of the module
    docstring. max_queue: the set's one bound, if it has one."""
    members = [Member(name, r.worker, r.queue_depth, r.inflight, r.served) for name, r in reports]
    ready = [m for m in members if m.worker.state == READY]
    if members:
        worker = (ready or members)[0]
    else:
        worker = WorkerHealth(STARTING, loading=dict(NO_WORKER, message=note or NO_WORKER["message"]))
    rtfs = [r.last_rtf for _, r in reports if r.last_rtf is not None]
    return HealthReport(
        status=STATUS_OF_STATE[combined_state([m.worker.state for m in members] or [STARTING])],
        worker=worker,
        queue_depth=sum(m.queue_depth for m in members),
        inflight=sum(m.inflight for m in members),
        max_queue=sum(r.max_queue for _, r in reports) if max_queue is None else max_queue,
        served=sum(m.served for m in members),
        last_rtf=rtfs[0] if rtfs else None,
        workers=members)
