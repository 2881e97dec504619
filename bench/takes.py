"""Takes (issue 20): the time of N takes of one text (N seeds, submitted together so the worker
decodes them in one batch, as webui/takes.py does) against one take, through the serving stack
(supervisor + worker process + engines, forced speech tokens, as bench/bench_worker.py).

    python bench/takes.py --model-dir D [--device cuda] [--dtype bfloat16] [--takes 1,3] [--tokens 250]
        [--repeats 3] [--no-stream]

One JSON line per worker boot, one per (takes, repeat), and a summary: per take count the median
wall time until every take is done and until the first take's first chunk, and the ratio of each
count's median to one take's (the issue's target: 3 takes <= 1.5x one take). On the CPU demo model
(`python -m cosyvoice3.demo DIR`, `--device cpu --dtype float32 --backend torch`) it runs in a
minute or two; the figure that counts is the GPU's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_worker import TEXT, start_router, worker_args  # noqa: E402

from cosyvoice3.spec import SpeechSpec  # noqa: E402
from cosyvoice3.synthesis.limits import PolicyLimits  # noqa: E402
from webui.takes import take_seeds  # noqa: E402
from worker.client import WorkerClient  # noqa: E402
from worker.protocol import Chunk, Done, Failed, Synthesize  # noqa: E402


def run_takes(client: WorkerClient, prompt, tokens: int, n: int, seed: int, stream: bool) -> dict:
    """N takes submitted back to back, then followed: wall time to the last Done, the first take's
    first chunk, audio seconds, failures."""
    audio, sr = prompt
    t0 = time.perf_counter()
    streams = [client.submit(Synthesize(uuid.uuid4().hex, SpeechSpec(TEXT, prompt_text="a prompt transcript for the "
                                                                      "benchmark", seed=take_seed, stream=stream),
                                        prompt_audio=audio, prompt_sample_rate=sr, forced_tokens=tokens))
               for take_seed in take_seeds(seed, n)]
    first, samples, failures, rate = None, 0, [], 24000
    for events in streams:
        for event in events:
            if isinstance(event, Chunk):
                first = first if first is not None else time.perf_counter() - t0
                samples, rate = samples + len(event.pcm), event.sample_rate
            elif isinstance(event, Failed):
                failures.append(f"{event.code}: {event.message}")
            if isinstance(event, (Done, Failed)):
                break
    return {"takes": n, "wall_s": round(time.perf_counter() - t0, 3),
            "first_chunk_s": None if first is None else round(first, 3), "audio_s": round(samples / rate, 2),
            "failures": failures}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    worker_args(p)
    p.add_argument("--takes", default="1,3", help="take counts to time, the first is the baseline")
    p.add_argument("--tokens", type=int, default=250, help="speech tokens per take (250 = 10 s of audio)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-stream", dest="stream", action="store_false", help="one chunk per segment")
    args = p.parse_args(argv)
    counts = [int(n) for n in args.takes.split(",")]
    prompt = sf.read(ROOT / "tests" / "golden" / "prompt_24k.wav", dtype="float32")
    router = start_router(args, PolicyLimits(), 1)
    if router is None:
        return 1
    try:
        client = WorkerClient(router)
        run_takes(client, prompt, args.tokens, max(counts), args.seed, args.stream)  # warm-up
        runs: dict[int, list[dict]] = {n: [] for n in counts}
        for repeat in range(args.repeats):
            for n in counts:
                line = run_takes(client, prompt, args.tokens, n, args.seed + repeat, args.stream)
                runs[n].append(line)
                print(json.dumps({"event": "run", "repeat": repeat, **line}), flush=True)
    finally:
        router.stop()
    wall = {n: statistics.median(r["wall_s"] for r in runs[n]) for n in counts}
    first = {n: statistics.median(r["first_chunk_s"] or 0.0 for r in runs[n]) for n in counts}
    base = counts[0]
    print(json.dumps({"event": "summary", "device": args.device, "dtype": args.dtype, "tokens": args.tokens,
                      "stream": args.stream, "repeats": args.repeats,
                      "wall_s": {str(n): wall[n] for n in counts}, "first_chunk_s": {str(n): first[n] for n in counts},
                      "ratio_to_one": {str(n): round(wall[n] / wall[base], 3) for n in counts},
                      "failures": sum(len(r["failures"]) for rs in runs.values() for r in rs)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
