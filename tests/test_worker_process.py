"""The worker process itself: boot failure, logs in the app's log, heartbeats, parent death."""

import logging
import os
import signal
import subprocess
import sys
import time

import psutil

from tests.conftest import ROOT
from worker.protocol import INTERNAL


def test_boot_failure_is_reported_and_not_retried(start_worker, tmp_path, synthesize):
    supervisor, client = start_worker(wait=False, worker={"model_dir": str(tmp_path / "no-such-model")})
    assert not client.wait_ready(30)
    health = client.health()
    assert health["status"] == "error" and health["worker"]["state"] == "boot_failed"
    assert "no-such-model" in health["worker"]["boot_error"]
    time.sleep(1.0)
    health = client.health()
    assert health["worker"]["restarts"] == 0 and health["worker"]["pid"] is None
    assert not [c for c in psutil.Process().children() if "spawn_main" in " ".join(c.cmdline())]
    outcome = synthesize(client)
    assert outcome.final.code == INTERNAL and "no-such-model" in outcome.final.message


def test_worker_log_records_reach_the_app_log_with_the_worker_pid(start_worker, caplog):
    caplog.set_level(logging.INFO)
    supervisor, client = start_worker()
    pid = client.health()["worker"]["pid"]
    time.sleep(0.2)
    ready = [r for r in caplog.records if r.name == "worker" and r.getMessage().startswith("ready")]
    assert ready, [r.getMessage() for r in caplog.records]
    assert ready[0].process == pid != os.getpid() and ready[0].processName == "cosyfast-worker"


def test_heartbeats_carry_memory_and_a_step_counter_that_moves_with_work(start_worker, synthesize):
    supervisor, client = start_worker()
    time.sleep(0.3)
    before = client.health()["worker"]
    assert before["heartbeat_age_s"] < 0.5 and before["rss"] > 50 << 20 and before["gpu_memory"] == 0
    synthesize(client)
    time.sleep(0.3)
    assert client.health()["worker"]["steps"] > before["steps"]


PARENT = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from worker.client import WorkerClient
from worker.protocol import WorkerConfig
from worker.supervisor import Supervisor, SupervisorConfig
supervisor = Supervisor(SupervisorConfig(worker=WorkerConfig(model_dir=sys.argv[1], device="cpu", backend="torch")))
supervisor.start()
assert WorkerClient(supervisor).wait_ready(60)
print(supervisor.health()["worker"]["pid"], flush=True)
time.sleep(600)
"""


def test_worker_exits_when_the_app_dies(demo_model_dir):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(demo_model_dir)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        worker = psutil.Process(int(parent.stdout.readline()))
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(5)
        end = time.monotonic() + 5
        while _alive(worker) and time.monotonic() < end:
            time.sleep(0.05)
        assert not _alive(worker)
    finally:
        parent.kill()
        parent.wait()


def _alive(process: psutil.Process) -> bool:
    """Running and not a zombie (an orphan is reaped by whatever adopted it, maybe later)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_worker_killed_while_booting_is_restarted_a_few_times_then_reported(start_worker):
    supervisor, client = start_worker(wait=False, max_boot_crashes=3)
    killed = set()
    end = time.monotonic() + 30
    while len(killed) < 3 and time.monotonic() < end:
        worker = client.health()["worker"]
        if worker["pid"] and worker["pid"] not in killed and worker["state"] in ("starting", "loading"):
            os.kill(worker["pid"], signal.SIGKILL)
            killed.add(worker["pid"])
        time.sleep(0.01)
    assert not client.wait_ready(10)
    worker = client.health()["worker"]
    assert worker["state"] == "boot_failed" and "3 times in a row" in worker["boot_error"]
    assert worker["restart_causes"] == {"boot_crashed": 2}
