"""The Ray Serve application (ray_serve/) on a real local Ray cluster: two CPU replicas of the demo
model behind the ingress, as the README's line starts it (`app_args="--demo --device cpu"
min_replicas=2 max_replicas=2`, the default CPU reservations) on a Ray of 2 CPUs, where it has to
fit. Through HTTP only: /health lists both replicas' workers, the OpenAI
speech endpoint answers with audio, concurrent requests are served by both replicas, and a SIGKILL
of one replica's worker process mid-stream is recovered by that replica's supervisor: every
request still gets the audio of an undisturbed run; a replica whose worker cannot boot again fails
Ray's health check and Ray replaces it. Ray's own processes are heavy on a 2-core machine, so one
cluster serves the whole module (its tests run in order).

Skipped where Ray is not installed (it is an optional extra); a failure when CI is set, which
installs requirements-ray.txt."""

import os
import shutil
import signal
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from cosyvoice3.download import DEMO_NAME
from tests.app_server import free_port, get_json, wait_until
from tests.browser.audio_samples import speechlike
from tests.conftest import BATCHED_ATOL

if os.environ.get("CI"):
    import ray  # CI installs requirements-ray.txt: a missing Ray fails here
else:
    ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install -r requirements-ray.txt)")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TEXT = "The quick brown fox jumps over the lazy dog near the river bank today."  # a few streaming chunks
SEED = 7
PER_REPLICA = 2  # --max-queue: each replica takes at most this many requests at once
BOOT_S = 300
CLUSTER_CPUS = 2  # a 2-core machine, as a new user tries the README's line
README_APP_ARGS = "--demo --device cpu"


@pytest.fixture(scope="module")
def model_dir(demo_model_dir, tmp_path_factory) -> Path:
    """The cluster's own copy of the demo model where `--demo --cache-dir CACHE` looks for it (a test
    takes a file of it away for a while)."""
    return Path(shutil.copytree(demo_model_dir, tmp_path_factory.mktemp("ray-cache") / "models" / DEMO_NAME))


@pytest.fixture(scope="module")
def cluster(model_dir, engine_cache, tmp_path_factory):
    from ray import serve

    from ray_serve.application import ClusterOptions, build

    root = tmp_path_factory.mktemp("ray")
    port = free_port()
    ray.init(num_cpus=CLUSTER_CPUS, include_dashboard=False, log_to_driver=False,
             _temp_dir=str(root / "ray"), object_store_memory=200 << 20)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        # the README's app_args; the rest is the test's plumbing (its own folders, torch without
        # timing the backends, quick hang detection, a small queue): none of it changes what Ray reserves
        app_args = (f"{README_APP_ARGS} --cache-dir {model_dir.parents[1]} --voices-dir {root / 'voices'} "
                    f"--backend torch --hang-timeout 10 --max-queue {PER_REPLICA}")
        options = ClusterOptions(app_args=app_args, min_replicas=2, max_replicas=2, report_s=0.3,
                                 health_check_period_s=2)
        serve.run(build(options), name="cosyfast", route_prefix="/")
        url = f"http://127.0.0.1:{port}/"
        wait_until(lambda: len(ready_workers(get_json(url + "health"))) == 2, BOOT_S, every_s=0.2)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()


def ready_workers(report: dict) -> list[dict]:
    return [w for w in report.get("workers", []) if w.get("state") == "ready"]


@pytest.fixture(scope="module")
def voice(cluster, tmp_path_factory):
    path = tmp_path_factory.mktemp("recording") / "alice.wav"
    sf.write(path, speechlike(3.0, 16000), 16000)
    with open(path, "rb") as f:
        reply = httpx.post(cluster + "v1/audio/voices", files={"file": ("alice.wav", f, "audio/wav")},
                           data={"name": "Alice", "transcript": "hello there"}, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()["name"]


def speak(url: str, voice: str, first_audio: threading.Event | None = None) -> np.ndarray:
    """One streamed speech request: its 16-bit PCM as float32 (sets `first_audio` at the first bytes)."""
    body = {"model": "cosyvoice3", "voice": voice, "input": TEXT, "response_format": "pcm", "seed": SEED}
    data = bytearray()
    with httpx.stream("POST", url + "v1/audio/speech", json=body, timeout=300) as response:
        assert response.status_code == 200, response.read()
        for part in response.iter_bytes():
            data += part
            if first_audio is not None and data:
                first_audio.set()
    return np.frombuffer(bytes(data), "<i2").astype(np.float32) / 32767.0


def speak_together(url: str, voice: str, n: int, while_streaming=None) -> list:
    """`n` requests at once; `while_streaming()` runs once every one of them has audio flowing.
    Returns each request's audio (or the exception it raised)."""
    results: list = [None] * n
    started = [threading.Event() for _ in range(n)]

    def one(i: int) -> None:
        try:
            results[i] = speak(url, voice, started[i])
        except BaseException as e:  # reported by the assertions below
            results[i] = e
            started[i].set()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for event in started:
        assert event.wait(120), "a request got no audio within 120 s"
    if while_streaming is not None:
        while_streaming()
    for t in threads:
        t.join(300)
        assert not t.is_alive(), "a request did not end within 300 s"
    return results


def served(url: str) -> dict:
    return {w["name"]: w["served"] for w in get_json(url + "health")["workers"]}


def assert_same_audio(audio, reference: np.ndarray) -> None:
    assert isinstance(audio, np.ndarray), audio
    assert audio.shape == reference.shape and np.allclose(audio, reference, atol=BATCHED_ATOL + 1 / 32767)


def test_health_lists_both_replicas(cluster):
    report = get_json(cluster + "health")
    assert report["status"] == "ok" and report["replicas"] == 2
    workers = ready_workers(report)
    assert len({w["name"] for w in workers}) == 2 and len({w["pid"] for w in workers}) == 2
    assert all(w["device"] == "cpu" for w in workers)
    assert report["worker"]["state"] == "ready" and report["max_queue"] == 2 * PER_REPLICA


def test_a_cluster_too_small_for_min_replicas_is_named_at_build(cluster, caplog):
    from ray_serve.application import build

    with caplog.at_level("WARNING", logger="ray_serve"):
        build({"app_args": README_APP_ARGS, "min_replicas": 4, "max_replicas": 4})
    assert f"it needs 2.5 CPUs (4 replicas x 0.5 + the ingress 0.5), the cluster has {CLUSTER_CPUS}" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="ray_serve"):
        build({"app_args": README_APP_ARGS, "min_replicas": 2, "max_replicas": 2})
    assert "cannot become ready" not in caplog.text


def test_both_replicas_serve_and_a_killed_worker_loses_nothing(cluster, voice):
    reference = speak(cluster, voice)
    assert reference.size > 0
    # the replicas report what they served within a second: wait for the count of the requests so
    # far (the voice's prompt features and the reference), so that the difference is this batch's
    wait_until(lambda: sum(served(cluster).values()) == 2, 30, every_s=0.2)
    before = served(cluster)
    # 2 x PER_REPLICA requests at once: Serve gives each replica at most PER_REPLICA of them
    for audio in speak_together(cluster, voice, 2 * PER_REPLICA):
        assert_same_audio(audio, reference)
    wait_until(lambda: sum(served(cluster).values()) == 2 + 2 * PER_REPLICA, 30, every_s=0.2)
    after = served(cluster)
    assert {replica: after[replica] - before[replica] for replica in before} == dict.fromkeys(before, PER_REPLICA)

    victim = ready_workers(get_json(cluster + "health"))[0]
    survivor_pid = next(w["pid"] for w in ready_workers(get_json(cluster + "health")) if w is not victim
                        and w["name"] != victim["name"])
    results = speak_together(cluster, voice, 2 * PER_REPLICA, lambda: os.kill(victim["pid"], signal.SIGKILL))
    for audio in results:  # the killed worker's two requests were resubmitted by its supervisor
        assert_same_audio(audio, reference)

    def recovered() -> bool:
        workers = {w["name"]: w for w in get_json(cluster + "health")["workers"]}
        w = workers.get(victim["name"], {})
        return w.get("state") == "ready" and w.get("restarts") == 1
    wait_until(recovered, 120, every_s=0.2)
    workers = {w["name"]: w for w in get_json(cluster + "health")["workers"]}
    replaced = workers[victim["name"]]
    assert replaced["last_restart_cause"] == "crashed" and replaced["pid"] != victim["pid"]
    untouched = next(w for r, w in workers.items() if r != victim["name"])
    assert untouched["pid"] == survivor_pid and untouched["restarts"] == 0


def test_ray_replaces_a_replica_whose_worker_cannot_boot_again(cluster, model_dir):
    workers = ready_workers(get_json(cluster + "health"))
    victim, survivor = workers[0], workers[1]
    weights = model_dir / "llm.pt"
    aside = weights.rename(model_dir / "llm.pt.aside")
    weights.write_bytes(b"not a checkpoint")  # a missing file would have --demo build the model again
    try:  # the victim's supervisor restarts its worker, which cannot load the model: boot_failed
        os.kill(victim["pid"], signal.SIGKILL)
        wait_until(lambda: any(w["name"] == victim["name"] and w["state"] == "boot_failed"
                               for w in get_json(cluster + "health")["workers"]), 120, every_s=0.1)
    finally:
        aside.replace(weights)
    # its health check fails; Ray stops it and starts a new replica, which boots with the model back

    def replaced() -> bool:
        ids = {w["name"] for w in ready_workers(get_json(cluster + "health"))}
        return len(ids) == 2 and victim["name"] not in ids and survivor["name"] in ids
    wait_until(replaced, BOOT_S, every_s=0.2)
    report = get_json(cluster + "health")
    assert report["status"] == "ok" and report["replicas"] == 2
    assert next(w for w in report["workers"] if w["name"] == survivor["name"])["pid"] == survivor["pid"]
