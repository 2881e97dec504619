"""A real worker process on the demo model is killed, hung, stalled, out of memory or leaking, and
the supervisor recovers with no request lost and the same audio as an undisturbed run. (Frozen
inside a send: test_supervisor_watchdog.py; the detection rules on a fake clock:
test_supervisor_detection.py.)

The workers here choose their backends as users' do ("auto": on the CPU, ONNX Runtime where it
beats PyTorch by the timing of the first start), so a restarted worker must make the choices of
the one it replaces (engines/choices.py) for the resumed audio to match."""

import logging
import os
import random
import signal
import threading
import time

import psutil
import pytest

from tests.conftest import BATCHED_ATOL, TWO_SEGMENTS, Outcome, assert_same_audio, next_heartbeats, timed_answer
from worker.protocol import WORKER_CRASHED, Chunk, Done, Failed


@pytest.fixture
def worker_backend() -> str:
    return "auto"


def backends_of(health: dict) -> dict[str, tuple[str, str]]:
    """module -> (backend, precision) the worker runs."""
    return {name: (b["backend"], b["precision"]) for name, b in health["worker"]["backends"].items()}


def test_sigkill_mid_stream_resumes_with_identical_audio(start_worker, synthesize, request_for, prompt_audio):
    supervisor, client = start_worker()
    prompt = client.prepare_prompt(prompt_audio[0], prompt_audio[1], "a prompt")
    reference = synthesize(client, TWO_SEGMENTS, prompt=prompt, seed=3)
    assert isinstance(reference.final, Done) and {c.segment for c in reference.chunks} == {0, 1}

    first_pid = client.health()["worker"]["pid"]
    first_backends = backends_of(client.health())
    events = []
    for event in client.submit(request_for(TWO_SEGMENTS, prompt=prompt, seed=3)):
        events.append(event)
        if isinstance(event, Chunk) and event.segment == 1 and event.index == 0:  # segment 0 delivered
            os.kill(first_pid, signal.SIGKILL)
    outcome = Outcome(events)

    assert_same_audio(outcome, reference)
    assert "recovering" in outcome.stages
    health = client.health()
    assert health["status"] == "ok"
    assert health["worker"]["restarts"] == 1 and health["worker"]["last_restart_cause"] == "crashed"
    assert health["worker"]["pid"] != first_pid and not psutil.pid_exists(first_pid)
    assert backends_of(health) == first_backends  # the choices of the worker it replaced, not timed anew
    assert all(b["remembered"] for b in health["worker"]["backends"].values())


def _recover_from(fault_kind, cause, start_worker, synthesize, request_for, prompt_audio, caplog, hang_timeout_s,
                  stall_timeout_s):
    caplog.set_level(logging.WARNING, logger="worker.faults")
    supervisor, client = start_worker(hang_timeout_s=hang_timeout_s, stall_timeout_s=stall_timeout_s)
    # a prepared prompt: every step is short (preparing one is the longest honest step)
    prompt = client.prepare_prompt(prompt_audio[0], prompt_audio[1], "a prompt")
    reference = synthesize(client, prompt=prompt, seed=4)
    msg = request_for(prompt=prompt, seed=4, fault={"kind": fault_kind, "step": 4})
    msg.request_id = f"{fault_kind}-at-step-4"
    timed = timed_answer(supervisor.submit(msg), 120)
    outcome = Outcome([e for _, e in timed])
    assert_same_audio(outcome, reference)
    # detection time: from the fault (the worker's log record says when) to the "recovering" notice
    fault = next(r for r in caplog.records if r.name == "worker.faults" and fault_kind in r.getMessage())
    recovering = next(t for t, e in timed if getattr(e, "stage", "") == "recovering")
    assert recovering - fault.created <= min(hang_timeout_s, stall_timeout_s) + 2.0
    health = client.health()
    assert health["worker"]["restarts"] == 1 and health["worker"]["last_restart_cause"] == cause


def test_hang_without_heartbeats_is_detected_and_recovered(start_worker, synthesize, request_for, prompt_audio,
                                                           caplog):
    _recover_from("hang", "hung", start_worker, synthesize, request_for, prompt_audio, caplog, hang_timeout_s=1.0,
                  stall_timeout_s=30.0)


def test_stall_with_heartbeats_but_no_steps_is_detected_and_recovered(start_worker, synthesize, request_for,
                                                                      prompt_audio, caplog):
    # the stall timeout must exceed the longest honest round, which on a CPU shared with other
    # work was seen to take over 3 s (a fresh worker's first rounds are the longest)
    _recover_from("stall", "stalled", start_worker, synthesize, request_for, prompt_audio, caplog,
                  hang_timeout_s=30.0, stall_timeout_s=15.0)


def test_oom_is_recovered_in_process_first_and_by_a_restart_the_second_time(start_worker, synthesize):
    supervisor, client = start_worker()
    reference = synthesize(client, seed=6)
    pid = client.health()["worker"]["pid"]
    outcome = synthesize(client, seed=6, fault={"kind": "oom", "step": 4, "attempts": [0, 1]})
    assert_same_audio(outcome, reference)
    assert outcome.stages.index("retrying") < outcome.stages.index("recovering")  # in-process, then a restart
    health = client.health()
    assert health["worker"]["restarts"] == 1 and health["worker"]["last_restart_cause"] == "oom"
    assert health["worker"]["pid"] != pid


def test_memory_over_the_ceiling_restarts_the_worker_once_idle(start_worker, synthesize):
    supervisor, client = start_worker()
    next_heartbeats(supervisor, 1)  # one with the RSS
    rss = client.health()["worker"]["rss"]
    assert rss > 50 << 20
    supervisor.config.rss_limit = rss + (100 << 20)
    pid = client.health()["worker"]["pid"]
    leaked = synthesize(client, fault={"kind": "leak", "step": 1, "mb": 200})
    assert isinstance(leaked.final, Done)  # the leaking request itself completes
    assert supervisor.wait_for(lambda: client.health()["worker"]["restarts"] == 1, 15)
    assert client.wait_ready(120)
    health = client.health()
    assert health["worker"]["last_restart_cause"] == "memory" and health["worker"]["pid"] != pid
    assert isinstance(synthesize(client).final, Done)


def test_fifty_requests_with_three_worker_kills_all_get_an_answer(start_worker, synthesize, request_for,
                                                                  prompt_audio):
    """Every request ends with exactly one answer from a closed set: Done with the audio of an
    undisturbed run (up to the rounding of batched audio), or Failed("worker_crashed") after its
    last attempt - a request started in the worker at each of the three kills, whose own events
    show the two restarts before the failure. Any other answer (overloaded, timeout, internal, ...)
    or none at all fails the test."""
    supervisor, client = start_worker(max_queue=64, max_attempts=3)
    prompt = client.prepare_prompt(prompt_audio[0], prompt_audio[1], "a prompt")
    fields = [dict(prompt=prompt, seed=i % 3, stream=i % 2 == 0, forced_tokens=5) for i in range(50)]
    references = {(f["seed"], f["stream"]): synthesize(client, **f) for f in fields[:6]}
    me = psutil.Process()
    rss_before = me.memory_info().rss
    next_heartbeats(supervisor, 2)  # the worker's memory after the references, not a heartbeat from before them
    worker_rss = [client.health()["worker"]["rss"]]  # each worker's, at its heaviest moment we see

    requests = [request_for(**f) for f in fields]
    for i, msg in enumerate(requests):
        msg.request_id = f"load-{i}"
    streams = [supervisor.submit(msg) for msg in requests]
    killed = []

    def kill_three_times():
        """Kill each worker once it is busy and has made a random number of steps."""
        rng = random.Random(0)
        for _ in range(3):
            def due(steps=rng.randint(5, 40)) -> bool:
                worker = client.health()["worker"]
                return worker["state"] == "ready" and bool(worker["busy"]) and worker["steps"] >= steps \
                    and worker["pid"] not in killed

            if not supervisor.wait_for(due, 120):
                return
            worker = client.health()["worker"]
            killed.append(worker["pid"])
            worker_rss.append(worker["rss"])  # serving the burst: a batch, as the last worker does
            os.kill(killed[-1], signal.SIGKILL)

    killer = threading.Thread(target=kill_three_times, daemon=True)
    killer.start()
    end = time.monotonic() + 300
    outcomes = [Outcome([e for _, e in timed_answer(stream, end - time.monotonic())]) for stream in streams]
    killer.join(5)

    assert len(killed) == 3 and len(outcomes) == 50
    for i, o in enumerate(outcomes):
        assert [e for e in o.events if isinstance(e, (Done, Failed))] == [o.final]
        if isinstance(o.final, Done):
            assert_same_audio(o, references[fields[i]["seed"], fields[i]["stream"]], atol=BATCHED_ATOL)
        else:
            assert isinstance(o.final, Failed) and o.final.code == WORKER_CRASHED, o.final
            assert "crashed 3 times while working on this request" in o.final.message, o.final.message
            assert o.stages.count("recovering") == 2, o.stages
    health = client.health()
    assert health["worker"]["restarts"] == 3 and health["worker"]["restart_causes"] == {"crashed": 3}
    assert health["queue_depth"] == 0 and health["inflight"] == 0
    assert all(not psutil.pid_exists(pid) for pid in killed)
    assert all(c.status() != psutil.STATUS_ZOMBIE for c in me.children(recursive=True))
    del streams, outcomes
    assert me.memory_info().rss - rss_before < 64 << 20
    # the last worker (up and reporting, so the check is never vacuous) holds no more than the
    # first ones did while they served the same requests
    assert supervisor.wait_for(lambda: client.health()["worker"]["state"] == "ready", 60)
    next_heartbeats(supervisor, 2)
    assert 0 < client.health()["worker"]["rss"] < max(worker_rss) + (64 << 20), worker_rss
