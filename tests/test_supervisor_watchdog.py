"""The watchdog cannot be blocked by the pipe: a real worker process stops itself (SIGSTOP) halfway
through sending an audio chunk, so the app's end of the pipe holds half a message. The supervisor
still sees the hang, kills and replaces the worker, and the request ends with the audio of an
undisturbed run."""

import logging
import os
import signal

import psutil

from tests.conftest import Outcome, assert_same_audio, timed_answer


def test_a_worker_frozen_inside_a_send_is_detected_and_replaced(start_worker, synthesize, request_for, caplog):
    caplog.set_level(logging.WARNING, logger="worker.faults")
    supervisor, client = start_worker(hang_timeout_s=1.0)
    reference = synthesize(client, seed=5)
    pid = client.health()["worker"]["pid"]
    msg = request_for(seed=5, fault={"kind": "freeze_in_send", "step": 4})
    msg.request_id = "frozen-in-send"
    events = supervisor.submit(msg)
    try:
        timed = timed_answer(events, timeout=120)
    finally:
        if psutil.pid_exists(pid) and psutil.Process(pid).status() == psutil.STATUS_STOPPED:
            os.kill(pid, signal.SIGKILL)  # today's supervisor leaves it frozen
    outcome = Outcome([e for _, e in timed])
    assert_same_audio(outcome, reference)
    frozen = next(r for r in caplog.records if r.name == "worker.faults" and "SIGSTOP" in r.getMessage())
    assert frozen.process == pid
    recovering = next(t for t, e in timed if getattr(e, "stage", "") == "recovering")
    assert recovering - frozen.created <= 1.0 + 2.0
    health = client.health()
    assert health["worker"]["restarts"] == 1 and health["worker"]["last_restart_cause"] == "hung"
    assert health["worker"]["pid"] != pid and not psutil.pid_exists(pid)
