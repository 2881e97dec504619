"""The router over several real CPU workers (worker/router.py): requests spread over the workers by
load, one queue bound over the set, and a SIGKILL of one worker under load - its requests move at
once to the others and resume where they were (no audio twice, none skipped), every request gets
exactly one answer, the others keep serving, the dead one comes back and serves again. Also the
pure parts: the combined health and the placement order."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from tests.conftest import BATCHED_ATOL, BOOT_TIMEOUT_S, TWO_SEGMENTS, Outcome, assert_same_audio, wait_for_exit
from worker.client import WorkerClient
from worker.protocol import BAD_INPUT, CANCELLED, OVERLOADED, Chunk, Done, Failed
from worker.router import Router, placement_key
from worker.supervisor import READY
from worker.supervisor.health import WorkerLoad, combined_state
from worker.supervisor.report import HealthReport, combined

ANSWER_TIMEOUT_S = 240
# The kill is a SIGKILL, seen by the process's exit at once; generous watch timeouts keep a shared,
# busy CPU (several workers on two cores) from turning slow rounds into hangs or stalls.
PATIENT = dict(hang_timeout_s=60.0, stall_timeout_s=120.0)


@pytest.fixture
def start_router(start_worker):
    """start_router(count, wait=True, **SupervisorConfig overrides) -> (router, client) over `count`
    supervised CPU workers (conftest's start_worker), all ready unless wait=False."""
    routers = []

    def start(count: int, wait: bool = True, **overrides):
        supervisors = [start_worker(wait=False, name=f"cosyfast-worker-{i}", **overrides)[0] for i in range(count)]
        router = Router(supervisors)
        routers.append(router)
        router.start()
        if wait:
            assert router.wait_for(lambda: all(s.state == READY for s in supervisors), BOOT_TIMEOUT_S), \
                router.health()
        return router, WorkerClient(router)

    yield start
    for router in routers:
        router.stop()


class Followed:
    """Requests submitted straight to the router, each read to its end by its own thread; `seen`
    is notified on every event, so a test can wait for a moment in the load."""

    def __init__(self, router: Router):
        self.router = router
        self.queues, self.events = {}, {}
        self.seen = threading.Condition()
        self._threads = []

    def submit(self, msg) -> None:
        events = self.router.submit(msg)
        self.queues[msg.request_id], self.events[msg.request_id] = events, []
        thread = threading.Thread(target=self._follow, args=(msg.request_id, events), daemon=True)
        self._threads.append(thread)
        thread.start()

    def _follow(self, request_id, events) -> None:
        while True:
            event = events.get(timeout=ANSWER_TIMEOUT_S)
            with self.seen:
                self.events[request_id].append(event)
                self.seen.notify_all()
            if isinstance(event, (Done, Failed)):
                return

    def finished(self, request_id) -> bool:
        events = self.events[request_id]
        return bool(events) and isinstance(events[-1], (Done, Failed))

    def chunks(self, request_id) -> int:
        return sum(isinstance(e, Chunk) for e in self.events[request_id])

    def wait(self, predicate, timeout: float) -> bool:
        with self.seen:
            return self.seen.wait_for(predicate, timeout)

    def outcomes(self) -> dict:
        for thread in self._threads:
            thread.join(ANSWER_TIMEOUT_S)
        return {rid: Outcome(events) for rid, events in self.events.items()}


def named(msg, request_id: str):
    msg.request_id = request_id
    return msg


def test_requests_spread_and_a_killed_worker_loses_nothing(start_router, request_for, synthesize):
    router, client = start_router(2, **PATIENT)
    workers = router.supervisors
    reference = synthesize(client, TWO_SEGMENTS, seed=7)  # alone: the audio of an undisturbed run
    assert isinstance(reference.final, Done) and len(reference.chunks) == 4

    load = Followed(router)
    for i in range(6):
        load.submit(named(request_for(TWO_SEGMENTS, seed=7), f"load-{i}"))
    assert [len(w.open_ids()) for w in workers] == [3, 3]  # placed by open requests, one set over all

    victim = workers[1]
    pid = victim.health()["worker"]["pid"]
    # kill it while a request of its own has delivered audio and is not finished: that one must resume
    assert load.wait(lambda: any(load.chunks(rid) and not load.finished(rid) for rid in victim.open_ids()),
                     ANSWER_TIMEOUT_S)
    os.kill(pid, signal.SIGKILL)
    assert wait_for_exit(pid, 10)
    # its requests leave its book at once, while it is still down (not after its restart)
    assert router.wait_for(lambda: victim.state != READY and not victim.open_ids(), 10), router.health()
    served_while_down = victim.health()["served"]
    moved = [rid for rid, events in load.events.items()
             if any(getattr(e, "stage", "") == "recovering" for e in events)]
    assert moved and any(load.chunks(rid) for rid in moved)

    meanwhile = synthesize(client, seed=3)  # the others keep serving while it restarts
    assert isinstance(meanwhile.final, Done), meanwhile.final

    outcomes = load.outcomes()
    for rid, outcome in outcomes.items():  # nothing lost; resumed streams neither repeat nor skip audio
        assert_same_audio(outcome, reference, atol=BATCHED_ATOL)
    for rid in moved:  # each answer names the worker that served it: the moved ones, the survivor
        assert outcomes[rid].final.stats["worker"]["name"] == workers[0].name

    assert victim.wait_for(lambda: victim.state == READY, BOOT_TIMEOUT_S), victim.health()
    back = router.health()["workers"][1]
    assert back["restarts"] == 1 and back["last_restart_cause"] == "crashed" and back["pid"] != pid
    assert back["served"] == served_while_down  # no moved request waited for its restart
    assert router.health()["workers"][0]["restarts"] == 0 and router.health()["workers"][0]["state"] == "ready"

    again = Followed(router)
    for i in range(2):
        again.submit(named(request_for(seed=i), f"again-{i}"))
    served_by = {o.final.stats["worker"]["pid"] for o in again.outcomes().values()}
    assert served_by == {w.health()["worker"]["pid"] for w in workers}  # one each: an idle set takes turns
    assert victim.health()["served"] > served_while_down  # the restarted worker takes requests again
    for events in list(load.queues.values()) + list(again.queues.values()):
        assert events.empty()  # exactly one answer: nothing after the Done


def test_one_queue_bound_and_one_set_of_ids_over_all_workers(start_router, request_for):
    router, _ = start_router(2, wait=False, max_queue=3)
    pids = [w.health()["worker"]["pid"] for w in router.supervisors]
    for pid in pids:  # frozen while booting: the requests wait in their books
        os.kill(pid, signal.SIGSTOP)
    try:
        queues = [router.submit(named(request_for(TWO_SEGMENTS), f"r{i}")) for i in range(3)]
        assert [sorted(w.open_ids()) for w in router.supervisors] == [["r0", "r2"], ["r1"]]  # by open requests
        refused = router.submit(named(request_for(), "r3")).get(timeout=1)  # each book alone would take it
        assert isinstance(refused, Failed) and refused.code == OVERLOADED and "3 requests" in refused.message
        router.cancel("r0")
        assert queues[0].get(timeout=5).code == CANCELLED
        duplicate = router.submit(named(request_for(), "r1")).get(timeout=1)  # placed on worker 0, open on 1
        assert isinstance(duplicate, Failed) and duplicate.code == BAD_INPUT and "already in use" in duplicate.message
        health = router.health()
        assert health["status"] == "starting" and health["max_queue"] == 3 and health["queue_depth"] == 2
        assert [w["name"] for w in health["workers"]] == ["cosyfast-worker-0", "cosyfast-worker-1"]
        assert [w["pid"] for w in health["workers"]] == pids and health["worker"]["pid"] == pids[0]
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def test_combined_health_is_ok_while_any_worker_is_ready():
    def report(state, **worker):
        return HealthReport.from_json({"status": "?", "worker": {"state": state, "pid": 1, **worker}, "queue_depth": 1,
                                       "inflight": 2, "max_queue": 64, "served": 3, "last_rtf": None})

    health = combined([("a", report("recovering")), ("b", report("ready"))], max_queue=10).to_json()
    assert health["status"] == "ok" and health["worker"]["name"] == "b" and health["worker"]["state"] == "ready"
    assert [w["name"] for w in health["workers"]] == ["a", "b"]
    assert (health["queue_depth"], health["inflight"], health["served"], health["max_queue"]) == (2, 4, 6, 10)
    assert health["workers"][1]["inflight"] == 2
    assert combined([("a", report("boot_failed")), ("b", report("loading"))], 1).status == "starting"
    assert combined([("a", report("boot_failed")), ("b", report("stopped"))], 1).status == "error"
    assert combined_state(["stopped", "stopped"]) == "stopped" and combined_state([]) == "stopped"
    assert combined_state(["starting", "recovering"]) == "recovering"


def test_placement_prefers_fewer_open_requests_then_free_rows_then_fewer_served():
    def load(open_, free, served):
        return WorkerLoad("w", "ready", True, open_, free, served)

    ordered = sorted([load(1, 8, 0), load(0, 2, 5), load(0, 6, 9), load(0, 6, 1)], key=placement_key)
    assert ordered == [load(0, 6, 1), load(0, 6, 9), load(0, 2, 5), load(1, 8, 0)]
