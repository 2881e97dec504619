"""A real worker process on the demo model is killed, hung, stalled, out of memory or leaking, and
the supervisor recovers with no request lost and the same audio as an undisturbed run."""

import logging
import os
import random
import signal
import threading
import time

import numpy as np
import psutil

from tests.conftest import TWO_SEGMENTS, Outcome
from worker.protocol import Chunk, Done, Failed


def timed_events(client, msg):
    """Iterate a request live; returns [(arrival wall-clock time, event)]."""
    return [(time.time(), event) for event in client.submit(msg)]


def assert_same_audio(outcome: Outcome, reference: Outcome):
    assert isinstance(outcome.final, Done), outcome.final
    assert [c.seq for c in outcome.chunks] == list(range(len(outcome.chunks)))
    assert [(c.segment, c.index) for c in outcome.chunks] == [(c.segment, c.index) for c in reference.chunks]
    np.testing.assert_array_equal(outcome.pcm, reference.pcm)


def test_sigkill_mid_stream_resumes_with_identical_audio(start_worker, synthesize, request_for, prompt_audio):
    supervisor, client = start_worker()
    prompt = client.prepare_prompt(prompt_audio[0], prompt_audio[1], "a prompt")
    reference = synthesize(client, TWO_SEGMENTS, prompt=prompt, seed=3)
    assert isinstance(reference.final, Done) and {c.segment for c in reference.chunks} == {0, 1}

    first_pid = client.health()["worker"]["pid"]
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


def _recover_from(fault_kind, cause, start_worker, synthesize, request_for, caplog, hang_timeout_s, stall_timeout_s):
    caplog.set_level(logging.WARNING, logger="worker.faults")
    supervisor, client = start_worker(hang_timeout_s=hang_timeout_s, stall_timeout_s=stall_timeout_s)
    reference = synthesize(client, seed=4)
    timed = timed_events(client, request_for(seed=4, fault={"kind": fault_kind, "step": 4}))
    outcome = Outcome([e for _, e in timed])
    assert_same_audio(outcome, reference)
    # detection time: from the fault (the worker's log record says when) to the "recovering" notice
    fault = next(r for r in caplog.records if r.name == "worker.faults" and fault_kind in r.getMessage())
    recovering = next(t for t, e in timed if getattr(e, "stage", "") == "recovering")
    assert recovering - fault.created <= min(hang_timeout_s, stall_timeout_s) + 2.0
    health = client.health()
    assert health["worker"]["restarts"] == 1 and health["worker"]["last_restart_cause"] == cause


def test_hang_without_heartbeats_is_detected_and_recovered(start_worker, synthesize, request_for, caplog):
    _recover_from("hang", "hung", start_worker, synthesize, request_for, caplog, hang_timeout_s=1.0,
                  stall_timeout_s=30.0)


def test_stall_with_heartbeats_but_no_steps_is_detected_and_recovered(start_worker, synthesize, request_for, caplog):
    # the stall timeout must exceed the longest honest step (the first one prepares the prompt)
    _recover_from("stall", "stalled", start_worker, synthesize, request_for, caplog, hang_timeout_s=30.0,
                  stall_timeout_s=3.0)


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
    time.sleep(0.3)  # a heartbeat with the RSS
    rss = client.health()["worker"]["rss"]
    assert rss > 50 << 20
    supervisor.config.rss_limit = rss + (100 << 20)
    pid = client.health()["worker"]["pid"]
    leaked = synthesize(client, fault={"kind": "leak", "step": 1, "mb": 200})
    assert isinstance(leaked.final, Done)  # the leaking request itself completes
    deadline = time.monotonic() + 15
    while client.health()["worker"]["restarts"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.wait_ready(30)
    health = client.health()
    assert health["worker"]["last_restart_cause"] == "memory" and health["worker"]["pid"] != pid
    assert isinstance(synthesize(client).final, Done)


def test_fifty_requests_with_three_worker_kills_all_get_an_answer(start_worker, synthesize, request_for,
                                                                  prompt_audio):
    supervisor, client = start_worker(max_queue=64, max_attempts=3)
    prompt = client.prepare_prompt(prompt_audio[0], prompt_audio[1], "a prompt")
    fields = [dict(prompt=prompt, seed=i % 3, stream=i % 2 == 0, forced_tokens=5) for i in range(50)]
    references = {(f["seed"], f["stream"]): synthesize(client, **f) for f in fields[:6]}
    me = psutil.Process()
    rss_before = me.memory_info().rss
    worker_rss_before = client.health()["worker"]["rss"]

    streams = [client.submit(request_for(**f)) for f in fields]
    killed, finished = [], threading.Event()

    def kill_three_times():
        rng = random.Random(0)
        while len(killed) < 3 and not finished.is_set():
            time.sleep(rng.uniform(0.1, 0.4))
            health = client.health()
            if health["worker"]["state"] == "ready" and health["worker"]["busy"]:
                killed.append(health["worker"]["pid"])
                os.kill(killed[-1], signal.SIGKILL)

    killer = threading.Thread(target=kill_three_times, daemon=True)
    killer.start()
    outcomes = [Outcome(list(stream)) for stream in streams]
    finished.set()
    killer.join(5)

    assert len(killed) == 3 and len(outcomes) == 50
    done = [o for o in outcomes if isinstance(o.final, Done)]
    failed = [o for o in outcomes if isinstance(o.final, Failed)]
    assert len(done) + len(failed) == 50 and len(done) >= 40
    for i, o in enumerate(outcomes):
        if isinstance(o.final, Done):
            assert_same_audio(o, references[fields[i]["seed"], fields[i]["stream"]])
        else:
            assert o.final.code == "worker_crashed" and "crashed 3 times" in o.final.message
    health = client.health()
    assert health["worker"]["restarts"] == 3 and health["worker"]["restart_causes"] == {"crashed": 3}
    assert health["queue_depth"] == 0 and health["inflight"] == 0
    assert all(not psutil.pid_exists(pid) for pid in killed)
    assert all(c.status() != psutil.STATUS_ZOMBIE for c in me.children(recursive=True))
    del streams, outcomes, done, failed
    assert me.memory_info().rss - rss_before < 64 << 20
    time.sleep(0.3)
    assert client.health()["worker"]["rss"] < worker_rss_before + (64 << 20)
