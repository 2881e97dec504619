"""Soak: the real app (`python app.py --demo`, a subprocess) used by N concurrent clients for T
minutes, half through the page's Gradio API (`gradio_client`, `/synthesize`) and half through the
OpenAI-compatible API (`openai` SDK, `/v1/audio/speech` with saved voices), with random texts,
prompts, modes and instructions, and optionally a SIGKILL of the worker every K seconds.

Every request ends one of four ways: audio (a non-empty wav or pcm body), a clear failure (the
page's one-sentence error, an OpenAI-shaped error with a code; on 429/503 the client waits as
`Retry-After` says), a broken stream (an API response whose body the server ended early because
its request failed after the headers were sent: the app logs why, the client sees only the
break), or lost (no answer by the deadline, which is past the app's own, or a stack trace). Prints one JSON line: sent, audio, clear failures
(by message), lost (must be 0), latency p50/p95, worker restarts, RSS of the app and the worker
after warm-up and at the end, the app's RSS growth and trend over the run and each worker process's
growth over its own life (sampled), the app's open file descriptors, and processes left after the
app stopped.

    python bench/soak.py --users 8 --minutes 30 --kill-every 120 [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.app_server import AppServer  # noqa: E402  (the app as the tests start it)

PROMPT_WAV = ROOT / "tests" / "golden" / "prompt_24k.wav"
TEXTS = [
    "Hello, this is a short test of the voice.",
    "The weather today is bright and clear, with a light wind from the west.",
    "今天天气很好，我们一起去公园散步吧。",
    "Please read this sentence slowly and clearly, one word at a time.",
    "收到您的消息了，我们会尽快回复。",
]
INSTRUCTIONS = ["cantonese", "sichuanese", "happy", "slow", "fast"]
WORKER_WARMUP_S = 30.0  # a worker's RSS is sampled once it has been ready (and serving) this long
ANSWER_TIMEOUT_S = 660.0  # past the app's own deadline (--request-timeout 600): the app must answer first
RECOVERY_TIMEOUT_S = 180.0  # for the worker to come back from the last kill before the final health reading


class Tally:
    """What happened to every request (thread-safe)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = self.audio = 0
        self.failures: dict[str, int] = {}
        self.lost: list[str] = []
        self.broken: list[str] = []  # streams the server ended early (their request failed)
        self.latency: list[float] = []

    def record(self, kind: str, detail: str = "", seconds: float | None = None) -> None:
        with self.lock:
            if kind == "audio":
                self.audio += 1
                self.latency.append(seconds)
            elif kind == "failure":
                key = detail.strip().splitlines()[0][:120] if detail.strip() else "?"
                self.failures[key] = self.failures.get(key, 0) + 1
            elif kind == "broken":
                self.broken.append(detail[:300])
            else:
                self.lost.append(detail[:300])

    def count_sent(self) -> None:
        with self.lock:
            self.sent += 1


def clear(message: str) -> bool:
    """A failure a user can read: one sentence, not a stack trace or an empty message."""
    return bool(message.strip()) and "Traceback" not in message and "File \"" not in message


def prompt_file(folder: Path, rng: random.Random, audio: np.ndarray, rate: int) -> Path:
    seconds = rng.uniform(2.0, 5.0)
    start = rng.randrange(0, max(1, len(audio) - int(seconds * rate)))
    path = folder / f"prompt_{rng.getrandbits(32):08x}.wav"
    sf.write(path, audio[start:start + int(seconds * rate)], rate)
    return path


def page_user(url: str, stop: float, tally: Tally, rng: random.Random, folder: Path, audio, rate) -> None:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    while time.monotonic() < stop:
        mode = rng.choice(["zero_shot", "cross_lingual", "instruct"])
        prompt = prompt_file(folder, rng, audio, rate)
        args = (rng.choice(TEXTS), mode, handle_file(str(prompt)), "a prompt" if mode == "zero_shot" else "",
                rng.choice(INSTRUCTIONS) if mode == "instruct" else "", rng.randrange(1000), 1.0)
        tally.count_sent()
        t0 = time.monotonic()
        try:
            job = client.submit(*args, api_name="/synthesize")
            path = job.result(timeout=ANSWER_TIMEOUT_S)
            frames = sf.info(path).frames
            tally.record("audio" if frames > 0 else "lost", "empty audio", time.monotonic() - t0)
        except Exception as e:  # noqa: BLE001 - sorted into clear failures and lost requests
            message = str(e)
            if type(e).__name__ == "AppError" and clear(message):
                tally.record("failure", message)
            else:
                tally.record("lost", f"{type(e).__name__}: {message}")
        finally:
            prompt.unlink(missing_ok=True)


def api_user(url: str, stop: float, tally: Tally, rng: random.Random, folder: Path, audio, rate) -> None:
    import httpx
    import openai

    client = openai.OpenAI(base_url=url + "v1", api_key="soak", timeout=ANSWER_TIMEOUT_S, max_retries=0)
    voice = None
    while voice is None and time.monotonic() < stop:  # a saved voice of this client, made over the API
        prompt = prompt_file(folder, rng, audio, rate)
        try:
            with open(prompt, "rb") as f:
                made = httpx.post(url + "v1/audio/voices", files={"file": (prompt.name, f, "audio/wav")},
                                  data={"name": f"soak-{rng.getrandbits(24):06x}", "transcript": "a prompt"},
                                  timeout=ANSWER_TIMEOUT_S)
            if made.status_code == 200:
                voice = made.json()
            else:  # refused while the worker recovers: try again
                time.sleep(1.0)
        except httpx.HTTPError:
            time.sleep(1.0)
        finally:
            prompt.unlink(missing_ok=True)
    while voice is not None and time.monotonic() < stop:
        body = {"model": "cosyvoice3", "voice": voice["id"], "input": rng.choice(TEXTS), "response_format": "pcm"}
        if rng.random() < 0.3:
            body["instructions"] = rng.choice(INSTRUCTIONS)
        tally.count_sent()
        t0 = time.monotonic()
        try:
            response = client.audio.speech.create(**body, extra_body={"seed": rng.randrange(1000)})
            data = response.read()
            tally.record("audio" if data else "lost", "empty audio", time.monotonic() - t0)
        except openai.APIStatusError as e:
            body = e.body if isinstance(e.body, dict) else {}
            error = body.get("error", body)  # the SDK hands over the "error" object itself
            if error.get("code") and clear(str(error.get("message", ""))):
                tally.record("failure", f"{e.status_code} {error['code']}: {error['message']}")
            else:
                tally.record("lost", f"{e.status_code}: {e.body}")
            if e.status_code in (429, 503):  # overloaded or recovering: wait as the server asks
                time.sleep(min(10.0, float(e.response.headers.get("retry-after") or 1.0)))
        except openai.APIConnectionError as e:
            # the body broke off after the 200 headers: the server ends a stream whose request
            # failed (the app logs why); no sentence reaches this client, so it is counted apart
            tally.record("broken", f"{type(e).__name__}: {e}")
        except Exception as e:  # noqa: BLE001 - a timeout: lost
            tally.record("lost", f"{type(e).__name__}: {e}")


def recovered(server, kills: int, timeout_s: float = RECOVERY_TIMEOUT_S) -> dict:
    """The app's health once its worker has come back from every kill (restarts >= kills, state
    ready), or as it is after timeout_s: a kill near the end is answered after the users stopped."""
    end = time.monotonic() + timeout_s
    while True:
        health = server.health()
        worker = health["worker"]
        if ((worker.get("restarts") or 0) >= kills and worker.get("state") == "ready") or time.monotonic() > end:
            return health
        time.sleep(0.5)


def rss_mb(pid: int | None) -> float | None:
    try:
        return round(psutil.Process(pid).memory_info().rss / 2**20, 1) if pid else None
    except psutil.Error:
        return None


def rss_trend(first: dict | None, last: dict, samples: list[tuple[float, float]]) -> dict:
    """The app's RSS after the warm-up: growth to the end (percent) and the slope of a least-squares
    line through the samples (MB per 10 minutes: a leak keeps climbing, a cache levels off), with
    the samples themselves."""
    if not first or not first.get("app_rss_mb") or not last.get("app_rss_mb"):
        return {"app_rss_growth_pct": None, "app_rss_slope_mb_per_10min": None, "app_rss_samples": samples}
    points = [(t, mb) for t, mb in samples if mb is not None]
    slope = float(np.polyfit(*zip(*points), 1)[0]) * 10 if len(points) >= 3 else None
    return {"app_rss_growth_pct": round(100 * (last["app_rss_mb"] / first["app_rss_mb"] - 1), 1),
            "app_rss_slope_mb_per_10min": round(slope, 2) if slope is not None else None,
            "app_rss_samples": samples}


def worker_rss(per_worker: dict[int, list[float]]) -> dict:
    """Each worker process's RSS over its own life (a kill replaces the process, so the first and
    the last reading of a run compare two processes): the largest growth from a worker's first
    sample to its last, and every worker's first sample (a climb there would be a leak that
    outlives the process: the engine cache, shared memory)."""
    lives = [mbs for mbs in per_worker.values() if len(mbs) >= 2]
    growth = max((100 * (mbs[-1] / mbs[0] - 1) for mbs in lives), default=None)
    return {"worker_rss_growth_pct": round(growth, 1) if growth is not None else None,
            "worker_lives_sampled": len(lives), "worker_rss_first_mb": [mbs[0] for mbs in per_worker.values()]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=8, help="concurrent clients (half page API, half OpenAI API)")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--kill-every", type=float, default=0.0, help="SIGKILL the worker every this many seconds (0: never)")
    p.add_argument("--warmup-s", type=float, default=300.0,
                   help="seconds of load before the RSS baseline (capped at a quarter of the run): the app's "
                        "first minutes fill caches and import lazily loaded modules")
    p.add_argument("--sample-every-s", type=float, default=30.0, help="seconds between the app's RSS samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", help="keep the app's folder (log, voices) here")
    args = p.parse_args(argv)
    root = Path(args.keep or tempfile.mkdtemp(prefix="cosyfast-soak-"))
    root.mkdir(parents=True, exist_ok=True)
    audio, rate = sf.read(PROMPT_WAV, dtype="float32")
    server = AppServer(root)
    server.wait_ready()
    app = psutil.Process(server.process.pid)
    tally = Tally()
    start = time.monotonic()
    stop = start + 60 * args.minutes
    users = []
    for i in range(args.users):
        target = page_user if i % 2 == 0 else api_user
        t = threading.Thread(target=target, name=f"user-{i}", daemon=True,
                             args=(server.url, stop, tally, random.Random(args.seed * 1000 + i), root, audio, rate))
        t.start()
        users.append(t)
    kills, first, next_kill = 0, None, start + args.kill_every if args.kill_every else None
    warmup_s = min(args.warmup_s, 60 * args.minutes / 4)
    samples: list[tuple[float, float]] = []  # (minutes since start, app RSS MB), after the warm-up
    worker_samples: dict[int, list[float]] = {}  # worker pid -> its RSS MB at each sample, after the warm-up
    next_sample = start + warmup_s
    while time.monotonic() < stop:
        time.sleep(0.5)
        now = time.monotonic()
        if now >= next_sample:
            app_mb, worker = rss_mb(app.pid), server.health()["worker"]
            pid = worker.get("pid")
            if first is None:
                first = {"app_rss_mb": app_mb, "worker_rss_mb": rss_mb(pid), "app_fds": app.num_fds()}
            samples.append((round((now - start) / 60, 2), app_mb))
            warm = worker.get("state") == "ready" and (worker.get("uptime_s") or 0) >= WORKER_WARMUP_S
            if pid and warm and (mb := rss_mb(pid)) is not None:
                worker_samples.setdefault(int(pid), []).append(mb)
            next_sample = now + args.sample_every_s
        if next_kill is not None and now >= next_kill and now < stop:  # no kill after the run's end
            pid = server.health()["worker"].get("pid")
            if pid:
                os.kill(int(pid), signal.SIGKILL)
                kills += 1
            next_kill = now + args.kill_every
    for t in users:
        t.join(ANSWER_TIMEOUT_S)
    stuck = [t.name for t in users if t.is_alive()]
    health = recovered(server, kills)
    last = {"app_rss_mb": rss_mb(app.pid), "worker_rss_mb": rss_mb(health["worker"].get("pid")),
            "app_fds": app.num_fds()}
    family = app.children(recursive=True)
    server.stop()
    _, alive = psutil.wait_procs(family, timeout=10)
    lat = list(tally.latency)
    print(json.dumps({
        "users": args.users, "minutes": args.minutes, "kill_every_s": args.kill_every, "kills": kills,
        "sent": tally.sent, "audio": tally.audio, "clear_failures": sum(tally.failures.values()),
        "failures": tally.failures, "broken_streams": len(tally.broken),
        "lost": len(tally.lost) + len(stuck), "lost_examples": tally.lost[:5],
        "stuck_clients": stuck,
        "latency_p50_s": round(float(np.percentile(lat, 50)), 2) if lat else None,
        "latency_p95_s": round(float(np.percentile(lat, 95)), 2) if lat else None,
        "restarts": health["worker"].get("restarts"), "warmup_s": warmup_s, "after_warmup": first, "end": last,
        **rss_trend(first, last, samples), **worker_rss(worker_samples),
        "leftover_processes": [f"{q.pid} {q.name()}" for q in alive if q.is_running()],
        "folder": str(root)}, ensure_ascii=False))
    return 0 if not tally.lost and not stuck else 1


if __name__ == "__main__":
    sys.exit(main())
