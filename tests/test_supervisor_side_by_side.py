"""Two supervisors in one app process, each with its own worker process (as a router over several
GPUs would run them): a crash of one worker restarts only that one, the other keeps serving with
no restart, and stopping one supervisor leaves the other's worker running."""

import os
import signal
import threading

import psutil

from tests.conftest import wait_for_exit
from worker.protocol import INTERNAL, Done, Failed


def test_a_crash_and_a_stop_touch_only_their_own_worker(start_worker, synthesize):
    first, first_client = start_worker(name="cosyfast-worker-0")
    _, second_client = start_worker(name="cosyfast-worker-1")
    first_pid, second_pid = first_client.health()["worker"]["pid"], second_client.health()["worker"]["pid"]
    assert first_pid != second_pid
    loops = {t.name for t in threading.enumerate()}
    assert {"cosyfast-worker-0-supervisor", "cosyfast-worker-1-supervisor"} <= loops

    os.kill(first_pid, signal.SIGKILL)
    assert isinstance(synthesize(second_client).final, Done)  # served while the first one recovers
    assert first.wait_for(lambda: first_client.health()["worker"]["restarts"] == 1, 30), first_client.health()
    assert first_client.wait_ready(120), first_client.health()
    replaced = first_client.health()["worker"]
    assert replaced["last_restart_cause"] == "crashed" and replaced["pid"] not in (first_pid, second_pid)
    untouched = second_client.health()["worker"]
    assert untouched["restarts"] == 0 and untouched["pid"] == second_pid and untouched["state"] == "ready"

    first.stop()
    assert wait_for_exit(replaced["pid"], 5)
    assert psutil.pid_exists(second_pid) and second_client.health()["status"] == "ok"
    assert isinstance(synthesize(second_client).final, Done)
    refused = synthesize(first_client).final  # the stopped one still answers: with a clear failure
    assert isinstance(refused, Failed) and refused.code == INTERNAL and "shutting down" in refused.message
