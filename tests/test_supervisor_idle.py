"""Idle release (`SupervisorConfig.idle_release_s`, `--idle-release-minutes`): a worker with no
request for that long is stopped on purpose, freeing its device; /health says idle (status ok);
the next request of any kind starts it again ("waking"), and requests that come meanwhile wait,
their deadlines standing still; none of it counts as a restart.

First the rules on a fake clock with fake worker processes (supervisor_fakes.py), then a real
worker process on the demo model: it really exits, wakes up for the next request with the same
audio, serves a request that came while it stopped, and is never released mid-request."""

import logging
import os
import signal
import time

import numpy as np
import psutil

from ray_serve.checks import HealthRules, replica_problem
from tests.conftest import TWO_SEGMENTS, assert_same_audio, wait_for_exit
from tests.envelopes import synthesize_msg
from tests.supervisor_fakes import Rig, drain
from worker.client import WorkerClient
from worker.protocol import (
    TIMEOUT,
    Done,
    Failed,
    PreparePrompt,
    Progress,
    PromptPrepared,
    Synthesize,
    Transcribe,
)
from worker.router import Router
from worker.supervisor import IDLE, READY, WAKING
from worker.supervisor.health import combined_state
from worker.supervisor.report import HealthReport, combined

UNTOUCHED = {"restarts": 0, "last_restart_cause": None, "restart_causes": {}, "last_exit": None}


def restart_history(health: dict) -> dict:
    return {key: health["worker"][key] for key in UNTOUCHED}


def stages(events) -> list[str]:
    return [getattr(e, "stage", None) for e in events]


# ---------------------------------------------------------------------------- the rules, fake clock

def live(rig: Rig, seconds: float, busy: tuple = ()) -> None:
    """Let `seconds` pass with a heartbeat every 10 s, its step counter moving (never hung or
    stalled), the clocks checked after each."""
    while seconds > 0:
        step = min(seconds, 10.0)
        rig.tick(step)
        rig.heartbeat(steps=rig.health["worker"]["steps"] + 1, busy=busy)
        seconds -= step

def test_a_worker_without_requests_is_released_once_and_it_is_no_restart():
    rig = Rig(idle_release_s=60.0, kill_grace_s=3.0)
    first = rig.ready()
    live(rig, 59.9)
    assert first.signals == [] and rig.health["worker"]["state"] == READY
    rig.tick(0.2)
    assert first.signals == ["SIGTERM"]  # the worker's clean Shutdown
    health = rig.health
    assert health["status"] == "ok" and health["worker"]["state"] == IDLE
    rig.tick(3.1)
    assert first.signals == ["SIGTERM", "SIGKILL"]  # still there after the grace period
    rig.exit(-9)
    rig.tick(3600.0)
    health = rig.health
    assert len(rig.processes) == 1 and health["worker"]["state"] == IDLE and health["worker"]["pid"] is None
    assert health["status"] == "ok" and restart_history(health) == UNTOUCHED


def test_open_requests_of_every_kind_hold_the_release_back():
    rig = Rig(idle_release_s=60.0)
    first = rig.ready()
    audio = np.zeros(24000, np.float32)
    for msg in (synthesize_msg("s", "Hello.", prompt_audio=audio, prompt_sample_rate=24000),
                PreparePrompt("p", audio, 24000, "a prompt"), Transcribe("t", audio, 24000)):
        live(rig, 59.0)
        rig.supervisor.submit(msg)
        live(rig, 240.0, busy=(msg.request_id,))  # a long request: four idle times
        rig.supervisor.handle(first, Done(msg.request_id))
        assert first.signals == []
    live(rig, 59.9)
    assert first.signals == []  # the idle time counts from the last answer
    rig.tick(0.2)
    assert first.signals == ["SIGTERM"]


def test_a_request_wakes_the_worker_and_its_deadline_stands_still_during_the_boot():
    rig = Rig(idle_release_s=60.0)
    first = rig.ready()
    live(rig, 60.0)
    rig.exit(0)
    events = rig.submit("r1", timeout_s=5.0)
    assert len(rig.processes) == 2 and rig.process is not first  # started at once, no backoff
    health = rig.health
    assert health["status"] == "ok" and health["worker"]["state"] == WAKING
    assert health["worker"]["loading"]["stage"] == "waking"
    (waking,) = drain(events)
    assert waking.stage == "waking" and "idle" in waking.message
    rig.tick(30.0)  # a boot six times as long as the request's deadline
    rig.supervisor.handle(rig.process, Progress("", "loading", 0.5, "loading flow.pt"))
    assert [(e.stage, e.fraction) for e in drain(events)] == [("loading", 0.5)]  # the boot's progress
    assert rig.health["worker"]["state"] == WAKING and rig.health["worker"]["loading"]["fraction"] == 0.5
    second = rig.ready()
    assert [m.request_id for m in second.sent if isinstance(m, Synthesize)] == ["r1"]
    assert rig.health["worker"]["state"] == READY and restart_history(rig.health) == UNTOUCHED
    rig.tick(4.9)
    assert drain(events) == []  # its 5 s count from the wake-up
    rig.tick(0.2)
    assert drain(events)[-1].code == TIMEOUT


def test_a_request_during_the_stop_waits_for_the_exit_which_starts_the_next_worker():
    rig = Rig(idle_release_s=60.0, kill_grace_s=3.0)
    first = rig.ready()
    live(rig, 60.0)
    events = rig.submit("r1")
    assert rig.health["worker"]["state"] == IDLE and len(rig.processes) == 1  # still stopping
    assert not any(isinstance(m, Synthesize) for m in first.sent)  # not to the worker that stops
    assert stages(drain(events)) == ["waking"]
    rig.exit(0)
    assert len(rig.processes) == 2 and rig.health["worker"]["state"] == WAKING
    rig.ready()
    assert [m.request_id for m in rig.process.sent if isinstance(m, Synthesize)] == ["r1"]
    assert restart_history(rig.health) == UNTOUCHED


def test_a_request_cancelled_during_the_stop_leaves_the_worker_idle_and_the_next_one_its_own_deadline():
    rig = Rig(idle_release_s=60.0)
    rig.ready()
    live(rig, 60.0)
    rig.submit("gone")
    rig.supervisor.cancel("gone")
    rig.exit(0)
    rig.tick(100.0)
    assert len(rig.processes) == 1 and rig.health["worker"]["state"] == IDLE
    events = rig.submit("r1", timeout_s=5.0)
    rig.tick(1.0)
    rig.ready()  # a wake-up of 1 s: the deadline moves 1 s later, not the 101 s since "gone" came
    rig.tick(4.9)
    assert not any(isinstance(e, Failed) for e in drain(events))
    rig.tick(1.2)
    assert drain(events)[-1].code == TIMEOUT


def test_a_wake_up_that_crashes_is_a_boot_crash():
    rig = Rig(idle_release_s=60.0, backoff_s=1.0)
    rig.ready()
    live(rig, 60.0)
    rig.exit(0)
    events = rig.submit("r1")
    rig.exit(1)  # died while booting
    health = rig.health["worker"]
    assert health["state"] == "recovering" and health["restarts"] == 1 and health["last_restart_cause"] == "boot_crashed"
    rig.tick(1.0)
    rig.ready()
    assert [m.request_id for m in rig.process.sent if isinstance(m, Synthesize)] == ["r1"]
    assert not any(isinstance(e, Failed) for e in drain(events))


def test_idle_release_is_off_by_default():
    rig = Rig()
    first = rig.ready()
    live(rig, 24 * 3600.0)
    assert first.signals == [] and rig.health["worker"]["state"] == READY


def test_an_idle_worker_is_healthy_in_a_set_and_to_ray():
    assert combined_state([IDLE, "recovering"]) == IDLE and combined_state([IDLE, READY]) == READY
    assert combined_state([WAKING, IDLE]) == WAKING
    idle = HealthReport.from_json({"worker": {"state": IDLE, "restarts": 1, "last_restart_age_s": 9999.0}})
    starting = HealthReport.from_json({"worker": {"state": "starting"}})
    assert idle.status == "ok" and combined([("a", idle), ("b", starting)]).status == "ok"
    rules = HealthRules(recovery_timeout_s=60.0)
    for state in (IDLE, WAKING):  # released long after its last restart: not "no ready worker since"
        health = {"status": "ok", "worker": {"state": state, "last_restart_age_s": 9999.0}}
        assert replica_problem(lambda: health, 0.0, rules) is None
    health = {"worker": {"state": "recovering", "last_restart_age_s": 9999.0}}
    assert "no ready worker" in replica_problem(lambda: health, 0.0, rules)


# ---------------------------------------------------------------------------- a real worker process

def released(supervisor, pid: int, timeout: float = 30.0) -> dict:
    """Wait until the worker `pid` was released (state idle, no process); returns the health."""
    assert supervisor.wait_for(lambda: supervisor.state == IDLE and supervisor.health()["worker"]["pid"] is None,
                               timeout), supervisor.health()
    assert wait_for_exit(pid, 5) and not psutil.pid_exists(pid)
    return supervisor.health()


def test_the_worker_process_exits_when_idle_and_wakes_up_with_the_same_audio(start_worker, synthesize, caplog):
    caplog.set_level(logging.INFO, logger="worker.supervisor")
    supervisor, client = start_worker()
    reference = synthesize(client, seed=7)
    pid = client.health()["worker"]["pid"]
    supervisor.config.idle_release_s = 0.3
    health = released(supervisor, pid)
    assert health["status"] == "ok" and restart_history(health) == UNTOUCHED
    assert any("released while idle" in r.getMessage() and "exited normally" in r.getMessage()
               for r in caplog.records)  # a clean Shutdown, not a SIGKILL

    outcome = synthesize(client, seed=7)
    assert_same_audio(outcome, reference)
    assert "waking" in outcome.stages and "recovering" not in outcome.stages
    health = client.health()
    assert health["worker"]["pid"] not in (None, pid) and restart_history(health) == UNTOUCHED


def test_a_request_that_comes_while_the_worker_stops_waits_and_is_served(start_worker, prompt_audio):
    # the worker held still (SIGSTOP), so it cannot act on its SIGTERM: the request comes while
    # it is asked to stop and is still there, until the SIGKILL after the grace period
    supervisor, client = start_worker(kill_grace_s=5.0)
    pid = client.health()["worker"]["pid"]
    os.kill(pid, signal.SIGSTOP)
    supervisor.config.idle_release_s = 0.3
    assert supervisor.wait_for(lambda: supervisor.state == IDLE, 10)
    events = client.submit(PreparePrompt("", prompt_audio[0], prompt_audio[1], "a prompt"))
    health = client.health()
    assert health["worker"]["pid"] == pid and psutil.pid_exists(pid) and health["queue_depth"] == 1
    answer = list(events)
    assert isinstance(answer[-1], Done) and any(isinstance(e, PromptPrepared) for e in answer), answer
    assert "waking" in stages(answer)
    assert not psutil.pid_exists(pid)
    health = client.health()
    assert health["worker"]["pid"] != pid and restart_history(health) == UNTOUCHED  # a kill, still no restart


def test_a_request_longer_than_the_idle_time_keeps_its_worker(start_worker, request_for):
    supervisor, client = start_worker()
    pid = client.health()["worker"]["pid"]
    states = []
    supervisor.add_listener(lambda: states.append(supervisor.state))
    idle_s = 0.3
    supervisor.config.idle_release_s = idle_s
    began = time.monotonic()
    events = list(client.submit(request_for(TWO_SEGMENTS, seed=2, forced_tokens=400)))
    ended = time.monotonic()
    assert isinstance(events[-1], Done), events[-1]
    assert ended - began > 3 * idle_s  # the request did outlast the idle time
    assert IDLE not in states and client.health()["worker"]["pid"] == pid
    assert supervisor.wait_for(lambda: supervisor.state == IDLE, 30)
    assert time.monotonic() - ended >= idle_s - 0.05  # the idle time counts from the answer


def test_a_router_whose_workers_are_all_idle_wakes_one_of_them(start_worker, synthesize):
    supervisors = [start_worker(name=f"cosyfast-worker-{i}")[0] for i in range(2)]
    router = Router(supervisors)
    router.start()
    try:
        pids = [s.health()["worker"]["pid"] for s in supervisors]
        for supervisor in supervisors:
            supervisor.config.idle_release_s = 0.3
        for supervisor, pid in zip(supervisors, pids):
            released(supervisor, pid)
        assert router.state == IDLE and router.health()["status"] == "ok"
        outcome = synthesize(WorkerClient(router), seed=3)
        assert isinstance(outcome.final, Done) and "waking" in outcome.stages
        served_by = outcome.final.stats["worker"]["name"]
        assert served_by in {s.name for s in supervisors}
        other = next(s for s in supervisors if s.name != served_by)
        assert other.state == IDLE and other.health()["worker"]["pid"] is None  # only one was woken
        assert all(restart_history(s.health()) == UNTOUCHED for s in supervisors)
    finally:
        router.stop()
