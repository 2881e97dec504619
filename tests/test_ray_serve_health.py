"""When a Serve replica tells Ray to replace it (ray_serve/checks.py), against a real supervised
worker: healthy while ready and while it recovers from a crash; unhealthy when the supervisor's
loop is frozen (held at its lock by a caller that never lets go) and when the worker could not
boot. And the cluster's /health made of the replicas' reports (ray_serve/board.py)."""

import os
import signal
import threading

import pytest

from ray_serve.checks import HealthRules, replica_problem
from tests.app_server import wait_until

RULES = HealthRules(loop_timeout_s=1.0, recovery_timeout_s=60.0)


def problem(supervisor, rules: HealthRules = RULES):
    return replica_problem(supervisor.health, supervisor.loop_age(), rules)


def test_a_ready_or_recovering_worker_is_healthy_a_frozen_loop_is_not(start_worker):
    supervisor, client = start_worker()
    assert problem(supervisor) is None
    os.kill(supervisor.health()["worker"]["pid"], signal.SIGKILL)
    supervisor.wait_for(lambda: supervisor.state != "ready", 10)
    assert supervisor.state in ("recovering", "starting", "loading") and problem(supervisor) is None
    assert client.wait_ready(120)
    assert problem(supervisor) is None

    release, held = threading.Event(), threading.Event()
    # wait_for evaluates its predicate under the supervisor's lock: this one keeps the lock
    freezer = threading.Thread(target=supervisor.wait_for, args=(lambda: held.set() or release.wait(60), 60))
    freezer.start()
    try:
        assert held.wait(5)
        wait_until(lambda: supervisor.loop_age() > RULES.loop_timeout_s, 10)  # lock-free: answers while frozen
        assert "has not gone round" in problem(supervisor)
    finally:
        release.set()
        freezer.join(10)
    wait_until(lambda: problem(supervisor) is None, 5)
    supervisor.stop()
    assert problem(supervisor) == "the supervisor's loop is not running"


def test_a_worker_that_cannot_boot_makes_the_replica_unhealthy(start_worker, tmp_path):
    supervisor, _ = start_worker(wait=False, worker={"model_dir": str(tmp_path / "missing")})
    assert supervisor.wait_for(lambda: supervisor.state == "boot_failed", 120), supervisor.health()
    assert problem(supervisor).startswith("the worker could not boot: ")


def report(state: str, restart_age=None, cause=None, **numbers) -> dict:
    worker = {"state": state, "last_restart_age_s": restart_age, "last_restart_cause": cause, "pid": 1}
    return {"status": "ok" if state == "ready" else "recovering", "worker": worker, **numbers}


def test_no_ready_worker_long_after_a_restart_is_unhealthy():
    rules = HealthRules(loop_timeout_s=30, recovery_timeout_s=100)
    assert replica_problem(lambda: report("recovering", 99, "hung"), 0.0, rules) is None
    assert "no ready worker for 101 s" in replica_problem(lambda: report("loading", 101, "hung"), 0.0, rules)
    assert replica_problem(lambda: report("ready", 500, "stalled"), 0.0, rules) is None
    assert replica_problem(lambda: report("starting", None), 0.0, rules) is None  # its first boot


def test_the_cluster_report_lists_every_replica():
    if not os.environ.get("CI"):  # CI installs the extra
        pytest.importorskip("ray", reason="Ray is an optional extra (pip install -r requirements-ray.txt)")
    from ray_serve.board import HealthBoard, cluster_report

    empty = cluster_report([], note="the board is restarting")
    assert empty["status"] == "starting" and empty["workers"] == []
    assert empty["worker"]["loading"]["message"] == "the board is restarting"
    now = [100.0]
    board = HealthBoard.func_or_class(stale_s=5.0, clock=lambda: now[0])
    board.post("b", report("recovering", 3, "crashed", queue_depth=1, inflight=0, max_queue=4, served=2,
                           last_rtf=None))
    board.post("a", report("ready", queue_depth=2, inflight=1, max_queue=4, served=5, last_rtf=0.3))
    merged = cluster_report(board.reports())
    assert merged["status"] == "ok" and merged["replicas"] == 2
    assert [(w["name"], w["served"]) for w in merged["workers"]] == [("a", 5), ("b", 2)]
    assert merged["worker"]["name"] == "a"
    assert (merged["queue_depth"], merged["inflight"], merged["max_queue"], merged["served"]) == (3, 1, 8, 7)
    assert merged["last_rtf"] == 0.3
    board.leave("a")
    alone = cluster_report(board.reports())
    assert alone["status"] == "recovering" and alone["worker"]["state"] == "recovering"
    now[0] += 5.5
    assert board.reports() == []
