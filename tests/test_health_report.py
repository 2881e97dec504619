"""worker/supervisor/report.py: the one shape of /health and the one rule that combines several
workers' reports, as the router (worker/router.py) and the Ray Serve application
(ray_serve/board.py) use it: the same members give the same report, apart from the router's one
queue bound and Ray's replica count. A key the shape does not know passes through."""

import importlib.util
import os

import pytest

from worker.supervisor.report import HealthReport, WorkerHealth, combined

HAVE_RAY = bool(os.environ.get("CI")) or importlib.util.find_spec("ray") is not None  # CI installs the extra


def posted(state: str, queue_depth=0, inflight=0, max_queue=4, served=0, last_rtf=None, **worker) -> dict:
    """A supervisor's health() as it travels (a replica's post to the board)."""
    return HealthReport(status="?", worker=WorkerHealth(state, pid=len(state), **worker), queue_depth=queue_depth,
                        inflight=inflight, max_queue=max_queue, served=served, last_rtf=last_rtf).to_json()


MEMBERS = [("a", posted("recovering", 1, 0, served=2, restarts=1, last_restart_cause="crashed")),
           ("b", posted("ready", 2, 1, served=5, last_rtf=0.3, extra={"flow_cache": {"hit_rate": 0.5}})),
           ("c", posted("ready", 0, 0, served=1, last_rtf=0.2))]


def test_one_worker_s_report_goes_to_json_and_back_with_keys_it_does_not_know():
    report = posted("ready", 1, 2, extra={"flow_cache": {"bytes": 10}})
    assert report["worker"]["flow_cache"] == {"bytes": 10} and report["worker"]["batch"]["max"] == 0
    assert HealthReport.from_json(report).to_json() == report
    assert HealthReport.from_json({"worker": {"state": "loading"}}).status == "starting"  # the state's status


def test_the_combined_rules():
    report = combined([(name, HealthReport.from_json(r)) for name, r in MEMBERS]).to_json()
    assert report["status"] == "ok" and report["worker"]["name"] == "b"  # the first ready member
    assert [w["name"] for w in report["workers"]] == ["a", "b", "c"]
    assert report["workers"][1]["flow_cache"] == {"hit_rate": 0.5}  # passed through
    assert (report["queue_depth"], report["inflight"], report["served"]) == (3, 1, 8)
    assert report["max_queue"] == 12 and report["last_rtf"] == 0.3  # each member's own bound, summed
    assert combined([(n, HealthReport.from_json(r)) for n, r in MEMBERS], max_queue=5).max_queue == 5  # one bound
    recovering = combined([("a", HealthReport.from_json(MEMBERS[0][1]))]).to_json()
    assert recovering["status"] == "recovering" and recovering["worker"]["name"] == "a"  # none ready: the first
    none = combined([], note="the board is restarting").to_json()
    assert none["status"] == "starting" and none["workers"] == []
    assert none["worker"]["state"] == "starting" and none["worker"]["loading"]["message"] == "the board is restarting"


@pytest.mark.skipif(not HAVE_RAY, reason="Ray is an optional extra (pip install -r requirements-ray.txt)")
def test_the_router_and_the_ray_application_combine_alike():
    from ray_serve.board import HealthBoard, cluster_report

    board = HealthBoard.func_or_class(stale_s=5.0)
    for name, report in MEMBERS:
        board.post(name, report)
    ray = cluster_report(board.reports())
    router = combined([(name, HealthReport.from_json(r)) for name, r in MEMBERS], max_queue=6).to_json()
    assert ray == {**router, "max_queue": 12, "replicas": 3}
