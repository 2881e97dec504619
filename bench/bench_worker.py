"""The whole serving stack under load: supervisor + worker process + engines, many streams at once.

    python bench/bench_worker.py --model-dir D [--device cuda] [--dtype bfloat16] [--concurrency 1,16,64]
        [--tokens 250 | --mixed 50,500] [--poisson RATE[@LO-HI],... --duration S] [--seed 0]
        [--offline] [--flow-cache-mb MB] [--prefix-cache-mb MB] [--decode-steps N] [--workers 1,2 [--per-worker]]

Levels (`--concurrency`): that many streaming requests are submitted at once through
`WorkerClient`, each forced to `--tokens` speech tokens (250 = 10 s of audio), or to a random
count in `--mixed LO,HI` (50,500 = 2 s to 20 s). `--poisson RATE` adds a level where requests
arrive as a Poisson process of RATE per second for `--duration` seconds (mixed lengths when
`--mixed` is given); a comma list gives one level per rate, and `RATE@LO-HI` its own lengths
(`4@75-150,8@75-150,12@75-150,6@50-500`: the public peer benchmark's 3-6 s at 4, 8 and 12
requests/s, then 2-20 s at 6/s). Per level one JSON line: first-chunk latency p50/p95/p99 and max,
completion p50, aggregate audio seconds per wall second (all audio / the level's wall time), the
decode batch size (mean of the worker's reports while the level ran, and its maximum), peak GPU
memory of the worker (reserved, as its heartbeats report it), the flow and vocoder seconds per
second of audio, the streaming flow cache (memory, voices, hit rate) and the LLM's prompt
prefixes (prompts, hit rate) at the level's end, and
failures; an open-loop level also gives its backlog when arrivals stop (requests still waiting
for their first chunk, and unfinished). `--offline` first runs one 10 s request without streaming
and one streamed, and prints the streaming cost (flow + vocoder seconds of the stream over those
of the offline request). Worker boot (model load + engines + graph capture) is a line of its
own; one request warms up before the levels. `--flow-cache-mb 0` runs without the flow cache
(every chunk re-solves its earlier frames), `--prefix-cache-mb 0` without the LLM's stored prompt
prefixes; `--decode-steps N` sends N decode steps per round before reading their tokens.

Several workers (`--workers 1,2`): for each count N, N supervised workers behind the app's router
(worker/router.py), one per GPU (cuda:0 ... cuda:N-1; N CPU workers with `--device cpu`), run
the same levels; with `--per-worker` a level's concurrency is per worker (64 = 64 streams per
GPU). Every line carries `workers`; the batch and GPU memory are summed / the peak over the
workers. A last `scaling` line gives, per level, aggregate audio-s/s and first-chunk p95 for each
worker count and the audio-s/s ratio to the smallest count.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosyvoice3.spec import SpeechSpec  # noqa: E402
from cosyvoice3.synthesis.limits import PolicyLimits  # noqa: E402
from worker.client import WorkerClient  # noqa: E402
from worker.protocol import Chunk, Done, Failed, Synthesize, WorkerConfig  # noqa: E402
from worker.router import Router  # noqa: E402
from worker.supervisor import Supervisor, SupervisorConfig  # noqa: E402

TEXT = "Benchmarking the serving stack with several requests arriving at the same time."
SR = 24000


def one_request(client: WorkerClient, prompt, tokens: int, seed: int, out: list, stream: bool = True) -> None:
    audio, sr = prompt
    spec = SpeechSpec(TEXT, prompt_text="a prompt transcript for the benchmark", seed=seed, stream=stream)
    msg = Synthesize(uuid.uuid4().hex, spec, prompt_audio=audio, prompt_sample_rate=sr, forced_tokens=tokens)
    t0 = time.perf_counter()
    first, samples, result, timeline = None, 0, "?", {}
    for event in client.submit(msg):
        if isinstance(event, Chunk) and len(event.pcm):
            first = first or time.perf_counter() - t0
            samples += len(event.pcm)
        elif isinstance(event, Done):
            result = "done"
            timeline = event.stats.get("timeline_s", {})
        elif isinstance(event, Failed):
            result = f"failed: {event.code}: {event.message}"
    out.append({"first_chunk_s": first, "total_s": time.perf_counter() - t0, "audio_s": samples / SR,
                "tokens": tokens, "result": result, "timeline": timeline, "sent_at": t0,
                "first_at": None if first is None else t0 + first, "done_at": time.perf_counter()})


class HealthSampler:
    """Reads /health's worker numbers every `period` seconds while a level runs (summed over the
    router's workers: decode batch, stage seconds; GPU memory: the peak of any one worker)."""

    def __init__(self, router: Router, period: float = 0.1):
        self.router, self.period = router, period
        self.batch, self.gpu = [], 0
        self.flow_cache: dict = {}
        self.prefix_cache: dict = {}
        self.stages_before = self._stages()
        self.stages: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _stages(self) -> dict:
        total: dict = {}
        for w in self.router.health()["workers"]:
            for k, v in w.get("batch", {}).get("stage_s", {}).items():
                total[k] = total.get(k, 0) + v
        return total

    def _run(self):
        while not self._stop.wait(self.period):
            workers = self.router.health()["workers"]
            current = sum(w.get("batch", {}).get("current", 0) for w in workers)
            if current:
                self.batch.append(current)
            self.gpu = max([self.gpu] + [w.get("gpu_memory", 0) for w in workers])

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        time.sleep(1.2)  # one more heartbeat, so the stage seconds include the level's last round
        after = self._stages()
        self.stages = {k: round(after.get(k, 0) - self.stages_before.get(k, 0), 3) for k in after}
        workers = self.router.health()["workers"]
        self.flow_cache = {w.get("name", str(i)): w.get("batch", {}).get("flow_cache", {}) for i, w in enumerate(workers)}
        self.prefix_cache = {w.get("name", str(i)): w.get("batch", {}).get("prefix_cache", {})
                             for i, w in enumerate(workers)}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return round(values[k], 4)


def report(level: str, results: list[dict], wall: float, sampler: HealthSampler, **extra) -> dict:
    firsts = [r["first_chunk_s"] for r in results if r["first_chunk_s"] is not None]
    audio = sum(r["audio_s"] for r in results)
    return {"event": "level", "level": level, **extra, "requests": len(results), "wall_s": round(wall, 3),
            "first_chunk_p50_s": percentile(firsts, 50), "first_chunk_p95_s": percentile(firsts, 95),
            "first_chunk_p99_s": percentile(firsts, 99), "first_chunk_max_s": percentile(firsts, 100),
            "total_p50_s": percentile([r["total_s"] for r in results], 50),
            "audio_s": round(audio, 2), "audio_s_per_s": round(audio / wall, 2),
            "batch_mean": round(statistics.mean(sampler.batch), 2) if sampler.batch else 0.0,
            "batch_max": max(sampler.batch, default=0), "peak_gpu_memory_gb": round(sampler.gpu / 1e9, 2),
            "worker_stage_s": sampler.stages,
            "flow_s_per_audio_s": round(sampler.stages.get("flow", 0) / audio, 4) if audio else None,
            "vocoder_s_per_audio_s": round(sampler.stages.get("vocoder", 0) / audio, 4) if audio else None,
            "flow_cache": sampler.flow_cache, "prefix_cache": sampler.prefix_cache,
            "worker_timeline_p50_s": {k: percentile([r["timeline"][k] for r in results if k in r["timeline"]], 50)
                                      for k in ("joined", "first_work", "first_audio")},
            "failures": sum(r["result"] != "done" for r in results),
            "results": sorted({r["result"] for r in results})}


def worker_args(p: argparse.ArgumentParser) -> None:
    """The arguments `start_router` reads (model, device, precision, backends, decode rows)."""
    p.add_argument("--model-dir", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--backend", default="auto")
    p.add_argument("--llm-kernels", choices=("torch", "triton"), default=WorkerConfig.llm_kernels,
                   help="the graphed decode step")
    p.add_argument("--max-active", type=int, default=None, help="rows of the token batch (default: the worker's)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    worker_args(p)
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument("--tokens", type=int, default=250)
    p.add_argument("--mixed", help="LO,HI: random speech tokens per request (50,500 = 2 s to 20 s)")
    p.add_argument("--poisson", help="levels with Poisson arrivals: RATE[@LO-HI],... requests per second "
                   "(LO-HI: speech tokens of each request, default --mixed or --tokens)")
    p.add_argument("--offline", action="store_true", help="first: one request offline and one streamed "
                   "(--tokens each): the streaming cost of flow + vocoder")
    p.add_argument("--flow-cache-mb", type=int, default=None, help="the flow cache's budget (0: off)")
    p.add_argument("--prefix-cache-mb", type=int, default=None, help="the LLM's prompt prefixes (0: off)")
    p.add_argument("--decode-steps", type=int, default=None, help="decode steps per round, read back once")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of Poisson arrivals")
    p.add_argument("--audio-works", type=int, default=None, help="chunk works per flow + vocoder batch")
    p.add_argument("--audio-slack", type=float, default=None, help="seconds ahead of its deadline a chunk is made")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", default="1", help="worker counts to run in turn (1,2: one GPU, then two)")
    p.add_argument("--per-worker", action="store_true", help="--concurrency and --poisson are per worker")
    p.add_argument("--log", action="store_true", help="the app's and the worker's log lines on stderr (INFO)")
    args = p.parse_args(argv)
    if args.log:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    rng = random.Random(args.seed)
    lo_hi = tuple(map(int, args.mixed.split(","))) if args.mixed else None

    def length() -> int:
        return rng.randint(*lo_hi) if lo_hi else args.tokens

    length.spec = args.mixed or args.tokens

    audio, sr = sf.read(ROOT / "tests" / "golden" / "prompt_24k.wav", dtype="float32")
    policy = PolicyLimits()
    policy = dataclasses.replace(policy, **{k: v for k, v in (("max_audio_works", args.audio_works),
                                                               ("audio_slack_s", args.audio_slack),
                                                               ("flow_cache_mb", args.flow_cache_mb),
                                                               ("prefix_cache_mb", args.prefix_cache_mb),
                                                               ("decode_steps", args.decode_steps)) if v is not None})
    levels: dict = {}  # level name -> {workers: (audio-s/s, first chunk p95)}
    for count in map(int, args.workers.split(",")):
        router = start_router(args, policy, count)
        if router is None:
            return 1
        try:
            for line in run_levels(args, router, (audio, sr), length, rng, count):
                levels.setdefault(line["level"], {})[count] = (line["audio_s_per_s"], line["first_chunk_p95_s"])
        finally:
            router.stop()
    if "," in args.workers:
        print(json.dumps({"event": "scaling", "per_worker": args.per_worker, "levels": {
            level: {"workers": sorted(by_count), "audio_s_per_s": [by_count[n][0] for n in sorted(by_count)],
                    "first_chunk_p95_s": [by_count[n][1] for n in sorted(by_count)],
                    "audio_ratio": [round(by_count[n][0] / by_count[min(by_count)][0], 3)
                                    if by_count[min(by_count)][0] else None for n in sorted(by_count)]}
            for level, by_count in levels.items()}}), flush=True)
    return 0


def start_router(args, policy: PolicyLimits, count: int) -> Router | None:
    """`count` supervised workers (one per GPU, or CPU workers) behind a router, ready; None when
    they did not boot (a JSON line says why)."""
    devices = [args.device] * count if args.device == "cpu" or count == 1 else [f"cuda:{i}" for i in range(count)]
    supervisors = []
    for i, device in enumerate(devices):
        worker = WorkerConfig(model_dir=args.model_dir, device=device, dtype=args.dtype, backend=args.backend,
                              llm_kernels=args.llm_kernels, max_active=args.max_active, policy=policy)
        cfg = SupervisorConfig(worker=worker, hang_timeout_s=120, stall_timeout_s=120, max_queue=1024 * count,
                               request_timeout_s=1800)
        supervisors.append(Supervisor(cfg, name=f"cosyfast-worker-{i}" if count > 1 else "cosyfast-worker"))
    router = Router(supervisors)
    t0 = time.perf_counter()
    router.start()
    if not router.wait_for(lambda: all(s.state == "ready" for s in supervisors), 900):
        print(json.dumps({"event": "boot_failed", "workers": count, "health": router.health()}, default=str))
        router.stop()
        return None
    health = router.health()
    print(json.dumps({"event": "ready", "workers": count, "devices": devices,
                      "boot_s": round(time.perf_counter() - t0, 1),
                      "backends": {k: f"{v.get('backend')}/{v.get('precision')} {v.get('detail', '')}"
                                   for k, v in health["worker"]["backends"].items()}}), flush=True)
    return router


def run_levels(args, router: Router, prompt, length, rng: random.Random, count: int) -> list[dict]:
    """The burst levels (and the Poisson level) through `count` workers; prints and returns their lines."""
    client = WorkerClient(router)
    for _ in range(count):  # warm-up: one request on each worker (an idle set takes turns)
        one_request(client, prompt, args.tokens, 0, [])
    lines = []
    if args.offline:
        lines += streaming_cost(router, client, prompt, args.tokens)
    for level in map(int, args.concurrency.split(",")):
        streams = level * count if args.per_worker else level
        results: list = []
        threads = [threading.Thread(target=one_request, args=(client, prompt, length(), i, results))
                   for i in range(streams)]
        with HealthSampler(router) as sampler:
            t = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - t
        lines.append(report(f"burst_{level}", results, wall, sampler, workers=count, concurrency=streams,
                            tokens=args.mixed or args.tokens))
        print(json.dumps(lines[-1]), flush=True)
    for rate, lengths in poisson_levels(args.poisson, length, rng):
        rate = rate * (count if args.per_worker else 1)
        results, threads = [], []
        with HealthSampler(router) as sampler:
            t = time.perf_counter()
            next_at = t
            while next_at - t < args.duration:
                time.sleep(max(0.0, next_at - time.perf_counter()))
                th = threading.Thread(target=one_request, args=(client, prompt, lengths(), len(threads), results))
                th.start()
                threads.append(th)
                next_at += rng.expovariate(rate)
            arrivals_end = time.perf_counter()
            for th in threads:
                th.join()
            wall = time.perf_counter() - t
        lines.append(report(f"poisson_{rate:g}", results, wall, sampler, workers=count, rate_per_s=rate,
                            duration_s=args.duration, tokens=lengths.spec, **backlog(results, arrivals_end)))
        print(json.dumps(lines[-1]), flush=True)
    return lines


def poisson_levels(spec: str | None, default_length, rng: random.Random):
    """`RATE[@LO-HI],...` -> [(rate, a function drawing one request's speech tokens, with .spec)]."""
    levels = []
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        rate, _, lo_hi = item.partition("@")
        if lo_hi:
            lo, hi = map(int, lo_hi.split("-"))

            def draw(lo=lo, hi=hi) -> int:
                return rng.randint(lo, hi)

            draw.spec = f"{lo},{hi}"
        else:
            def draw() -> int:
                return default_length()

            draw.spec = getattr(default_length, "spec", None)
        levels.append((float(rate), draw))
    return levels


def backlog(results: list[dict], arrivals_end: float) -> dict:
    """When arrivals stopped: requests sent that had no first chunk yet, and that had not finished."""
    sent = [r for r in results if r["sent_at"] <= arrivals_end]
    return {"backlog_no_first_chunk": sum(r["first_at"] is None or r["first_at"] > arrivals_end for r in sent),
            "backlog_unfinished": sum(r["done_at"] > arrivals_end for r in sent)}


def streaming_cost(router: Router, client: WorkerClient, prompt, tokens: int) -> list[dict]:
    """One request offline, then the same streamed, alone: the flow and vocoder seconds of each
    (the worker's stage clocks) and the stream's over the offline's."""
    lines, cost = [], {}
    for stream in (False, True):
        results: list = []
        with HealthSampler(router) as sampler:
            t = time.perf_counter()
            one_request(client, prompt, tokens, 1, results, stream=stream)
            wall = time.perf_counter() - t
        name = "stream_1" if stream else "offline_1"
        lines.append(report(name, results, wall, sampler, concurrency=1, tokens=tokens))
        cost[name] = sampler.stages.get("flow", 0) + sampler.stages.get("vocoder", 0)
        print(json.dumps(lines[-1]), flush=True)
    print(json.dumps({"event": "streaming_cost", "tokens": tokens, "offline_flow_vocoder_s": round(cost["offline_1"], 4),
                      "stream_flow_vocoder_s": round(cost["stream_1"], 4),
                      "ratio": round(cost["stream_1"] / cost["offline_1"], 3) if cost["offline_1"] else None}),
          flush=True)
    return lines


if __name__ == "__main__":
    sys.exit(main())
