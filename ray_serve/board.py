"""The replicas' health, gathered in one place, and the cluster's `/health` made of it.

A Serve handle sends each call to one replica of its choosing, so the ingress cannot ask every
replica for its health. Instead each `WorkerReplica` posts its supervisor's report to the
`HealthBoard` (one small replica of its own) every `report_s`, and the ingress reads the board.
A report older than `stale_s` is dropped: its replica died or was replaced, and Ray's new one
posts its own.

`cluster_report(reports)` is the `/health` of the whole application: the router's rule
(`worker.supervisor.report.combined`) over the replicas' reports, each worker named by its Serve
replica id (`workers[i].name`), every replica bounding its own queue (`max_queue` adds up), plus
`replicas`, how many reported.
"""

from __future__ import annotations

import time

from ray import serve

from worker.supervisor.report import HealthReport, combined


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
    report = combined([(r.get("replica"), HealthReport.from_json(r)) for r in reports], note=note)
    report.extra["replicas"] = len(reports)
    return report.to_json()
