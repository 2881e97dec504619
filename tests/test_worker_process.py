"""The worker process itself: boot failure, logs in the app's log, heartbeats, parent death."""

import logging
import os
import signal
import subprocess
import sys
import threading

import psutil

from tests.conftest import ROOT, next_heartbeats, wait_for_exit
from worker.protocol import INTERNAL


def test_boot_failure_is_reported_and_not_retried(start_worker, tmp_path, synthesize):
    supervisor, client = start_worker(wait=False, worker={"model_dir": str(tmp_path / "no-such-model")})
    assert not client.wait_ready(30)
    health = client.health()
    assert health["status"] == "error" and health["worker"]["state"] == "boot_failed"
    assert "no-such-model" in health["worker"]["boot_error"]
    assert health["worker"]["restarts"] == 0 and health["worker"]["pid"] is None  # no restart loop
    assert "failed boot" in health["worker"]["last_exit"]
    assert not [c for c in psutil.Process().children() if "spawn_main" in " ".join(c.cmdline())]
    outcome = synthesize(client)
    assert outcome.final.code == INTERNAL and "no-such-model" in outcome.final.message


class _ReadyRecord(logging.Handler):
    """Catches the worker's "ready" log record as it arrives."""

    def __init__(self):
        super().__init__()
        self.record, self.arrived = None, threading.Event()

    def emit(self, record):
        if record.getMessage().startswith("ready"):
            self.record = record
            self.arrived.set()


def test_worker_log_records_reach_the_app_log_with_the_worker_pid(start_worker, caplog):
    caplog.set_level(logging.INFO)
    catcher = _ReadyRecord()
    logging.getLogger("worker").addHandler(catcher)
    try:
        supervisor, client = start_worker()
        pid = client.health()["worker"]["pid"]
        assert catcher.arrived.wait(10), [r.getMessage() for r in caplog.records]
    finally:
        logging.getLogger("worker").removeHandler(catcher)
    ready = catcher.record
    assert ready.name == "worker" and ready.process == pid != os.getpid() and ready.processName == "cosyfast-worker"


def test_heartbeats_carry_memory_and_a_step_counter_that_moves_with_work(start_worker, synthesize):
    supervisor, client = start_worker()
    next_heartbeats(supervisor, 1)
    before = client.health()["worker"]
    assert before["heartbeat_age_s"] < 0.5 and before["rss"] > 50 << 20 and before["gpu_memory"] == 0
    synthesize(client)
    next_heartbeats(supervisor, 2)
    assert client.health()["worker"]["steps"] > before["steps"]


PARENT = f"""
import signal, sys
sys.path.insert(0, {str(ROOT)!r})
from worker.client import WorkerClient
from worker.protocol import WorkerConfig
from worker.supervisor import Supervisor, SupervisorConfig
supervisor = Supervisor(SupervisorConfig(worker=WorkerConfig(model_dir=sys.argv[1], device="cpu", backend="torch")))
supervisor.start()
assert WorkerClient(supervisor).wait_ready(60)
print(supervisor.health()["worker"]["pid"], flush=True)
signal.pause()  # until the test kills this process
"""


def test_worker_exits_when_the_app_dies(demo_model_dir):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(demo_model_dir)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        worker = int(parent.stdout.readline())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(5)
        assert wait_for_exit(worker, 5)  # exited (an orphan is reaped by whoever adopted it, maybe later)
    finally:
        parent.kill()
        parent.wait()


def test_a_worker_killed_while_booting_is_restarted_a_few_times_then_reported(start_worker):
    supervisor, client = start_worker(wait=False, max_boot_crashes=3)
    killed = []

    def booting_again() -> bool:
        worker = client.health()["worker"]
        return worker["pid"] not in [*killed, None] and worker["state"] in ("starting", "loading")

    for _ in range(3):
        assert supervisor.wait_for(booting_again, 30), client.health()
        killed.append(client.health()["worker"]["pid"])  # still the booting one: it is replaced only
        os.kill(killed[-1], signal.SIGKILL)  # after it has exited
    assert not client.wait_ready(10)
    worker = client.health()["worker"]
    assert worker["state"] == "boot_failed" and "3 times in a row" in worker["boot_error"]
    assert worker["restart_causes"] == {"boot_crashed": 2}
