"""The whole serving stack under load: supervisor + worker process + engines, concurrent requests.

    python bench/bench_worker.py --model-dir D [--device cuda] [--concurrency 1,4] [--tokens 250]

For each concurrency level, that many streaming requests (forced to `--tokens` speech tokens,
10 s of audio at 250) are submitted at once through `WorkerClient`; prints per level the median
and worst first-chunk latency and completion time, the aggregate real-time factor, and the
worker's backends. Worker boot (model load + engine set-up) is reported separately.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worker.client import WorkerClient  # noqa: E402
from worker.protocol import Chunk, Done, Failed, Synthesize, WorkerConfig  # noqa: E402
from worker.supervisor import Supervisor, SupervisorConfig  # noqa: E402

TEXT = "Benchmarking the serving stack with several requests arriving at the same time."


def one_request(client: WorkerClient, prompt, tokens: int, seed: int, out: list) -> None:
    audio, sr = prompt
    msg = Synthesize(request_id=uuid.uuid4().hex, text=TEXT, prompt_audio=audio, prompt_sample_rate=sr,
                     prompt_text="a prompt transcript for the benchmark", seed=seed, stream=True,
                     forced_tokens=tokens)
    t0 = time.perf_counter()
    first, samples, result = None, 0, "?"
    for event in client.submit(msg):
        if isinstance(event, Chunk) and len(event.pcm):
            first = first or time.perf_counter() - t0
            samples += len(event.pcm)
        elif isinstance(event, Done):
            result = "done"
        elif isinstance(event, Failed):
            result = f"failed: {event.code}: {event.message}"
    out.append({"first_chunk_s": first, "total_s": time.perf_counter() - t0, "audio_s": samples / 24000,
                "result": result})


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--backend", default="auto")
    p.add_argument("--concurrency", default="1,4")
    p.add_argument("--tokens", type=int, default=250)
    args = p.parse_args(argv)
    audio, sr = sf.read(ROOT / "tests" / "golden" / "prompt_24k.wav", dtype="float32")
    cfg = SupervisorConfig(worker=WorkerConfig(model_dir=args.model_dir, device=args.device, dtype=args.dtype,
                                               backend=args.backend), hang_timeout_s=120, stall_timeout_s=120)
    supervisor = Supervisor(cfg)
    t0 = time.perf_counter()
    supervisor.start()
    client = WorkerClient(supervisor)
    if not client.wait_ready(600):
        print(json.dumps({"event": "boot_failed", "health": supervisor.health()}, default=str))
        supervisor.stop()
        return 1
    health = supervisor.health()
    print(json.dumps({"event": "ready", "boot_s": round(time.perf_counter() - t0, 1),
                      "backends": {k: f"{v.get('backend')}/{v.get('precision')} {v.get('detail', '')}"
                                   for k, v in health["worker"]["backends"].items()}}), flush=True)
    one_request(client, (audio, sr), args.tokens, 0, [])  # warm-up: graph capture, autotuning
    for level in map(int, args.concurrency.split(",")):
        results: list = []
        threads = [threading.Thread(target=one_request, args=(client, (audio, sr), args.tokens, i, results))
                   for i in range(level)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t
        firsts = [r["first_chunk_s"] for r in results if r["first_chunk_s"] is not None]
        print(json.dumps({"event": "level", "concurrency": level, "wall_s": round(wall, 3),
                          "first_chunk_median_s": round(statistics.median(firsts), 4) if firsts else None,
                          "first_chunk_max_s": round(max(firsts), 4) if firsts else None,
                          "total_median_s": round(statistics.median(r["total_s"] for r in results), 3),
                          "audio_s": round(sum(r["audio_s"] for r in results), 2),
                          "aggregate_rtf": round(wall / max(1e-9, sum(r["audio_s"] for r in results)), 4),
                          "results": sorted({r["result"] for r in results})}), flush=True)
    supervisor.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
