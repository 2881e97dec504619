"""The replicas' health, gathered in one place, and the cluster's `/health` made of it.

A Serve handle sends each call to one replica of its choosing, so the ingress cannot ask every
replica for its health. Instead each `WorkerReplica` posts its supervisor's report to the
`HealthBoard` (one small replica of its own) every `report_s`, and the ingress reads the board.
A report older than `stale_s` is dropped: its replica died or was replaced, and Ray's new one
posts its own.

`cluster_report(reports)` is the `/health` of the whole application: `workers` lists every
replica's worker (what the single-machine app's `worker` holds, plus `replica`, the Serve
replica id, and `served`, the requests it answered with Done); `worker` stays, as the first ready one (else the first), for the page's status panel
and older callers; `status` is "ok" while at least one worker is ready; queue numbers add up.
"""

from __future__ import annotations

import time

from ray import serve

from worker.supervisor import READY, STARTING

NO_REPLICA = {"stage": "starting", "fraction": 0.0, "message": "waiting for a replica of the model worker"}


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
class HealthBoard:
    def __init__(self, stale_s: float = 5.0, clock=time.monotonic):
        self._stale_s, self._clock = stale_s, clock
        self._reports: dict[str, tuple[float, dict]] = {}  # replica id -> (when it came, its report)

    def post(self, replica: str, report: dict) -> None:
        self._reports[replica] = (self._clock(), report)

    def leave(self, replica: str) -> None:
        self._reports.pop(replica, None)

    def reports(self) -> list[dict]:
        """The fresh reports, each with its `replica`, in replica order."""
        now = self._clock()
        for replica in [r for r, (at, _) in self._reports.items() if now - at > self._stale_s]:
            del self._reports[replica]
        return [dict(report, replica=replica) for replica, (_, report) in sorted(self._reports.items())]


def cluster_report(reports: list[dict], note: str = "") -> dict:
    """The application's health dict from the replicas' reports (see the module docstring).
    note: why there are no reports (the board could not be read), shown while there are none."""
    workers = [dict(r.get("worker") or {}, replica=r.get("replica"), served=r.get("served", 0)) for r in reports]
    ready = [w for w in workers if w.get("state") == READY]
    if workers:
        first = (ready or workers)[0]
        status = "ok" if ready else reports[workers.index(first)].get("status", "starting")
    else:
        first = {"state": STARTING, "loading": dict(NO_REPLICA, message=note or NO_REPLICA["message"])}
        status = "starting"
    return {
        "status": status,
        "worker": first,
        "workers": workers,
        "replicas": len(workers),
        "queue_depth": sum(r.get("queue_depth", 0) for r in reports),
        "inflight": sum(r.get("inflight", 0) for r in reports),
        "max_queue": sum(r.get("max_queue", 0) for r in reports),
        "served": sum(r.get("served", 0) for r in reports),
        "last_rtf": next((r["last_rtf"] for r in reports if r.get("last_rtf") is not None), None),
    }
