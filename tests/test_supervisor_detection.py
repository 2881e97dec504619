"""The supervisor's detection and restart logic on a fake clock with fake worker processes: hang,
stall, memory ceiling, recycling, backoff, boot failure and boot crashes, boot timeout, deadlines,
SIGTERM-then-SIGKILL, and a likely out-of-memory kill. No processes, no threads, no sleeps."""

import numpy as np

from tests.supervisor_fakes import Rig, drain
from worker.protocol import (
    INTERNAL,
    TIMEOUT,
    WORKER_CRASHED,
    WORKER_HUNG,
    BootFailed,
    Cancel,
    Chunk,
    Done,
    Failed,
    Progress,
    Synthesize,
)
from worker.supervisor.causes import BOOT_CRASHED, CRASHED, HUNG, MEMORY, RECYCLED, STALLED


def sent_requests(process) -> list[Synthesize]:
    return [m for m in process.sent if isinstance(m, Synthesize)]


def test_no_heartbeat_for_the_hang_timeout_restarts_the_worker_and_resubmits_its_request():
    rig = Rig(hang_timeout_s=30.0, kill_grace_s=3.0)
    first = rig.ready()
    events = rig.submit("r1")
    rig.heartbeat(steps=1, busy=("r1",))  # the worker started it
    rig.tick(29.9)
    assert first.signals == [] and rig.health["status"] == "ok"
    rig.heartbeat(steps=2, busy=("r1",))
    rig.tick(29.9)
    assert first.signals == []  # heartbeats reset the clock
    rig.tick(0.2)
    assert first.signals == ["SIGTERM"]
    health = rig.health["worker"]
    assert health["state"] == "recovering" and health["last_restart_cause"] == HUNG and health["restarts"] == 1
    recovering = [e for e in drain(events) if isinstance(e, Progress) and e.stage == "recovering"]
    assert len(recovering) == 1 and "stopped responding" in recovering[0].message
    rig.tick(2.9)
    assert first.signals == ["SIGTERM"]
    rig.tick(0.2)
    assert first.signals == ["SIGTERM", "SIGKILL"]  # still there after the grace period
    rig.exit(-9)
    assert "likely" not in rig.health["worker"]["last_exit"]  # we killed it
    rig.tick()
    assert len(rig.processes) == 2  # the first restart does not wait
    second = rig.ready()
    (again,) = sent_requests(second)
    assert again.request_id == "r1" and again.attempt == 1


def test_a_busy_worker_whose_step_counter_stands_still_is_stalled():
    rig = Rig(hang_timeout_s=30.0, stall_timeout_s=60.0)
    first = rig.ready()
    rig.submit("r1")
    rig.heartbeat(steps=5, busy=("r1",))
    for _ in range(11):  # heartbeats keep coming, the step counter moves: fine
        rig.tick(10.0)
        rig.heartbeat(steps=rig.health["worker"]["steps"] + 1, busy=("r1",))
    assert first.signals == []
    for _ in range(6):  # 60 s of heartbeats with the counter frozen: not yet
        rig.tick(10.0)
        rig.heartbeat(steps=16, busy=("r1",))
    assert first.signals == []
    rig.tick(0.5)
    assert first.signals == ["SIGTERM"] and rig.health["worker"]["last_restart_cause"] == STALLED


def test_health_shows_the_decode_batch_of_the_last_heartbeat():
    rig = Rig()
    rig.ready()
    assert rig.health["worker"]["batch"] == {"current": 0, "mean": 0.0, "max": 0}  # no heartbeat yet
    rig.heartbeat(steps=3, batch={"current": 5, "mean": 2.5, "max": 7})
    assert rig.health["worker"]["batch"] == {"current": 5, "mean": 2.5, "max": 7}
    rig.heartbeat(steps=4, batch={"current": 0, "mean": 2.0, "max": 7})
    assert rig.health["worker"]["batch"]["current"] == 0


def test_an_idle_worker_is_never_stalled():
    rig = Rig(stall_timeout_s=60.0)
    first = rig.ready()
    for _ in range(20):
        rig.tick(10.0)
        rig.heartbeat(steps=0)
    assert first.signals == [] and rig.health["worker"]["restarts"] == 0


def test_memory_over_the_ceiling_restarts_once_idle_and_holds_new_requests_back():
    rig = Rig(rss_limit=1000)
    first = rig.ready()
    running = rig.submit("r1")
    rig.heartbeat(steps=1, busy=("r1",), rss=2000)
    rig.tick(1.0)
    assert first.signals == []  # busy: the request finishes first
    rig.submit("r2")
    assert [m.request_id for m in sent_requests(first)] == ["r1"]  # held back
    rig.supervisor.handle(first, Done("r1", {"rtf": 0.5}))
    assert isinstance(drain(running)[-1], Done)
    rig.tick()
    assert first.signals == ["SIGTERM"] and rig.health["worker"]["last_restart_cause"] == MEMORY
    rig.exit(0)
    rig.tick()
    second = rig.ready()
    assert [m.request_id for m in sent_requests(second)] == ["r2"] and sent_requests(second)[0].attempt == 0


def test_gpu_memory_over_its_ceiling_and_a_spent_request_budget_restart_too():
    rig = Rig(gpu_limit=100)
    first = rig.ready()
    rig.heartbeat(gpu_memory=101)
    rig.tick()
    assert first.signals == ["SIGTERM"] and rig.health["worker"]["last_restart_cause"] == MEMORY

    rig = Rig(recycle_after=2)
    first = rig.ready()
    for rid in ("a", "b"):
        rig.submit(rid)
        rig.tick()
        assert first.signals == []
        rig.supervisor.handle(first, Done(rid))
    rig.tick()
    assert first.signals == ["SIGTERM"] and rig.health["worker"]["last_restart_cause"] == RECYCLED


def test_crashes_in_a_row_back_off_doubling_up_to_the_maximum_and_a_served_request_resets_it():
    rig = Rig(backoff_s=1.0, backoff_max_s=5.0)
    delays = []
    for _ in range(5):
        rig.ready()
        rig.exit(-11)  # SIGSEGV: a crash
        waited = 0.0
        count = len(rig.processes)
        while len(rig.processes) == count:
            rig.tick(0.25)
            waited += 0.25
        delays.append(waited)
    assert delays == [0.25, 1.0, 2.0, 4.0, 5.0]  # (0.25: the first tick)
    assert rig.health["worker"]["restart_causes"] == {CRASHED: 5}
    first = rig.ready()
    rig.submit("r1")
    rig.supervisor.handle(first, Done("r1"))
    rig.exit(-11)
    rig.tick(0.0)
    assert len(rig.processes) == 7  # the streak was reset: no wait


def test_a_worker_that_says_it_cannot_boot_is_not_restarted_and_its_requests_get_the_error():
    rig = Rig()
    waiting = rig.submit("r1")
    first = rig.process
    rig.supervisor.handle(first, BootFailed(first.pid, "model directory not found: /nowhere"))
    assert first.signals == ["SIGTERM"]
    rig.exit(2)
    assert rig.health["worker"]["state"] == "boot_failed" and rig.health["status"] == "error"
    (answer,) = drain(waiting)
    assert answer.code == INTERNAL and "model directory not found" in answer.message
    rig.tick(1000.0)
    assert len(rig.processes) == 1 and rig.health["worker"]["restarts"] == 0
    (refused,) = drain(rig.submit("r2"))
    assert refused.code == INTERNAL and "/nowhere" in refused.message


def test_boot_crashes_are_retried_then_reported():
    rig = Rig(max_boot_crashes=3)
    for _ in range(3):
        rig.exit(-9)
        rig.tick(60.0)
    worker = rig.health["worker"]
    assert len(rig.processes) == 3 and worker["state"] == "boot_failed"
    assert "3 times in a row" in worker["boot_error"] and "SIGKILL" in worker["boot_error"]
    assert worker["restart_causes"] == {BOOT_CRASHED: 2}


def test_a_boot_longer_than_the_boot_timeout_is_killed_and_counts_as_a_boot_crash():
    rig = Rig(boot_timeout_s=10.0)
    first = rig.process
    rig.tick(9.9)
    assert first.signals == []
    rig.tick(0.2)
    assert first.signals == ["SIGKILL"]
    rig.tick(1.0)
    assert first.signals == ["SIGKILL"]  # once
    rig.exit(-9)
    rig.tick()
    assert len(rig.processes) == 2 and rig.health["worker"]["last_restart_cause"] == BOOT_CRASHED


def test_no_boot_timeout_waits_for_a_long_engine_build():
    rig = Rig(boot_timeout_s=None, hang_timeout_s=30.0)
    rig.tick(3600.0)
    assert rig.process.signals == [] and rig.health["worker"]["state"] == "starting"


def test_a_request_past_its_deadline_answers_timeout_and_is_cancelled_in_the_worker():
    rig = Rig(request_timeout_s=600.0)
    first = rig.ready()
    slow, quick = rig.submit("slow"), rig.submit("quick", timeout_s=5.0)
    rig.heartbeat(steps=1, busy=("slow", "quick"))
    rig.tick(5.1)
    assert drain(quick)[-1].code == TIMEOUT and Cancel("quick") in first.sent
    assert not any(isinstance(e, Failed) for e in drain(slow))
    rig.supervisor.handle(first, Chunk("quick", 0, np.zeros(10, np.float32), 24000))  # late: dropped
    assert drain(quick) == []


def test_the_last_attempt_fails_with_the_code_of_the_cause():
    rig = Rig(max_attempts=2, hang_timeout_s=30.0)
    events = rig.submit("r1")
    for _ in range(2):
        rig.ready()
        rig.heartbeat(steps=1, busy=("r1",))
        rig.tick(31.0)  # hung
        rig.tick(3.1)  # SIGKILL
        rig.exit(-9)
        rig.tick()
    final = drain(events)[-1]
    assert isinstance(final, Failed) and final.code == WORKER_HUNG
    assert "stopped responding 2 times" in final.message and "no heartbeat for 31.0 s" in final.message
    assert rig.health["queue_depth"] == 0


def test_a_request_sent_but_not_started_keeps_its_attempt():
    rig = Rig(max_attempts=1)
    events = rig.submit("r1")
    rig.ready()
    rig.exit(-9)  # before any heartbeat or progress named r1
    rig.tick()
    second = rig.ready()
    assert sent_requests(second)[0].attempt == 0 and not any(isinstance(e, Failed) for e in drain(events))


def test_a_sigkill_nobody_sent_with_memory_near_the_limit_reads_as_likely_out_of_memory():
    rig = Rig(max_attempts=1, rss_limit=1000 << 20)
    first = rig.ready()
    events = rig.submit("r1")
    rig.heartbeat(steps=1, busy=("r1",), rss=950 << 20)
    rig.exit(-9, first)
    last_exit = rig.health["worker"]["last_exit"]
    assert "SIGKILL" in last_exit and "950 MB of a 1000 MB limit" in last_exit and "out of memory" in last_exit
    final = drain(events)[-1]
    assert final.code == WORKER_CRASHED and "crashed 1 time " in final.message and "out of memory" in final.message

    rig = Rig(rss_limit=1000 << 20)
    rig.ready()
    rig.heartbeat(rss=500 << 20)
    rig.exit(-9)
    assert rig.health["worker"]["last_exit"] == "was killed by SIGKILL (signal 9)"


def test_messages_from_a_replaced_worker_are_ignored():
    rig = Rig()
    first = rig.ready()
    events = rig.submit("r1")
    rig.heartbeat(steps=1, busy=("r1",))
    rig.exit(-9)
    rig.tick()
    second = rig.ready()
    rig.supervisor.handle(first, Done("r1"))  # a late word of the dead one
    assert not any(isinstance(e, Done) for e in drain(events))
    rig.supervisor.handle(second, Done("r1"))
    assert isinstance(drain(events)[-1], Done)
