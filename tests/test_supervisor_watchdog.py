"""The watchdog cannot be blocked by the pipe: a real worker process stops itself (SIGSTOP) halfway
through sending an audio chunk, so the app's end of the pipe holds half a message. The supervisor
still sees the hang, kills and replaces the worker, every request it held ends with the audio of
an undisturbed run, and /health stops saying "ok" once the heartbeat is overdue.

On the supervisor before worker/supervisor/ (one thread doing `poll()`, a blocking `recv()` and the
checks) this fails: the thread waits for the rest of the chunk for good, nothing is answered."""

import logging
import os
import signal
import threading

import psutil

from tests.conftest import BATCHED_ATOL, Outcome, assert_same_audio, timed_answer

HANG_TIMEOUT_S = 1.0


class HealthLog:
    """Health reports as the supervisor's loop makes progress: a thread waits on `wait_for`, whose
    predicate runs under the supervisor's lock each time the loop has handled an item or ticked,
    and records the report then."""

    def __init__(self, supervisor):
        self.reports: list[dict] = []
        self._supervisor, self._done = supervisor, threading.Event()
        self._thread = threading.Thread(target=self._record, daemon=True)
        self._thread.start()

    def _record(self) -> None:
        def note() -> bool:
            self.reports.append(self._supervisor.health())
            return self._done.is_set()

        self._supervisor.wait_for(note, 300)

    def close(self) -> list[dict]:
        self._done.set()
        self._thread.join(5)
        return self.reports


def test_a_worker_frozen_inside_a_send_is_detected_and_replaced(start_worker, synthesize, request_for, prompt_audio,
                                                               caplog):
    caplog.set_level(logging.WARNING, logger="worker.faults")
    # a generous stall timeout: what is tested is the hang, not how long a round may take on a busy CPU
    supervisor, client = start_worker(hang_timeout_s=HANG_TIMEOUT_S, stall_timeout_s=60.0)
    prompt = client.prepare_prompt(prompt_audio[0], prompt_audio[1], "a prompt")
    reference, other_reference = synthesize(client, prompt=prompt, seed=5), synthesize(client, prompt=prompt, seed=6)
    pid = client.health()["worker"]["pid"]
    frozen_msg = request_for(prompt=prompt, seed=5, fault={"kind": "freeze_in_send", "step": 4})
    frozen_msg.request_id = "frozen-in-send"
    other_msg = request_for(prompt=prompt, seed=6)
    other_msg.request_id = "alongside"
    health_log = HealthLog(supervisor)
    frozen_events, other_events = supervisor.submit(frozen_msg), supervisor.submit(other_msg)
    try:
        timed = timed_answer(frozen_events, timeout=120)
        other = Outcome([e for _, e in timed_answer(other_events, timeout=60)])
    finally:
        reports = health_log.close()
        if psutil.pid_exists(pid) and psutil.Process(pid).status() == psutil.STATUS_STOPPED:
            os.kill(pid, signal.SIGKILL)  # the old supervisor leaves it frozen
    assert_same_audio(Outcome([e for _, e in timed]), reference, atol=BATCHED_ATOL)
    assert_same_audio(other, other_reference, atol=BATCHED_ATOL)

    frozen = next(r for r in caplog.records if r.name == "worker.faults" and "SIGSTOP" in r.getMessage())
    assert frozen.process == pid
    recovering = next(t for t, e in timed if getattr(e, "stage", "") == "recovering")
    assert recovering - frozen.created <= HANG_TIMEOUT_S + 2.0

    # /health while it happened: "ok" only while the frozen worker's heartbeat was younger than the
    # hang timeout (plus the loop's reaction time), then not "ok" until a new worker was ready
    states = [(r["status"], r["worker"]["pid"], r["worker"]["heartbeat_age_s"]) for r in reports]
    assert all(age <= HANG_TIMEOUT_S + 0.5 for status, p, age in states if status == "ok" and p == pid), states
    first_down = next(i for i, (status, _, _) in enumerate(states) if status != "ok")
    back_up = next(i for i, (status, p, _) in enumerate(states) if status == "ok" and p not in (pid, None))
    assert first_down < back_up and all(status != "ok" for status, _, _ in states[first_down:back_up])

    health = client.health()
    assert health["worker"]["restarts"] == 1 and health["worker"]["last_restart_cause"] == "hung"
    assert health["worker"]["pid"] != pid and not psutil.pid_exists(pid)
