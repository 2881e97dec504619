"""Speed of the prompt recogniser (SenseVoice-Small) on a 10 s prompt, with the released model size.

    python bench/bench_asr.py [--model-dir D] [--device cpu|cuda] [--dtype fp32|fp16|bf16]
        [--seconds 10] [--runs 5] [--threads N]

Without `--model-dir` a full-size random recogniser (the released hyperparameters, 936 MB) is
written to a temporary folder first (`python -m asr.demo DIR --full-size` does the
same). Times `Recognizer.recognize` end to end: fbank, LFR, CMVN, the encoder, CTC greedy
decoding and the tokenizer. Targets: 3 s on a CPU, 300 ms on a GPU. Needs torch, numpy, pyyaml
and sentencepiece only. Prints one JSON line per run, then a summary line (medians); the first
run is a warm-up and is reported apart.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr.demo import write_demo_recognizer  # noqa: E402
from asr.recognizer import Recognizer  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def speechlike(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Harmonics with a moving pitch under a syllable-rate envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t) ** 2
    return (0.2 * voice * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", help="a recogniser directory (default: build a full-size random one)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=DTYPES, default="fp32")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, help="torch's intra-op threads (default: torch's own choice); on a CPU "
                                               "shared with other work, 1 avoids waiting on a descheduled thread "
                                               "at every operation")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="cosyfast-asr-") as tmp:
        model_dir = Path(args.model_dir) if args.model_dir else Path(tmp) / "full"
        built_s = None
        if not args.model_dir:
            t0 = time.perf_counter()
            write_demo_recognizer(model_dir, full_size=True)
            built_s = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        recognizer = Recognizer.from_pretrained(model_dir, device=device, dtype=DTYPES[args.dtype])
        sync(device)
        load_s = round(time.perf_counter() - t0, 3)
        params = sum(p.numel() for p in recognizer.model.parameters())
        audio = speechlike(args.seconds)
        times = []
        for run in range(args.runs + 1):
            sync(device)
            t0 = time.perf_counter()
            result = recognizer.recognize(audio)
            sync(device)
            elapsed = time.perf_counter() - t0
            print(json.dumps({"run": run, "warmup": run == 0, "elapsed_s": round(elapsed, 4),
                              "chars": len(result.text)}), flush=True)
            if run:
                times.append(elapsed)
    print(json.dumps({
        "summary": "asr", "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "dtype": args.dtype, "threads": torch.get_num_threads(), "audio_s": args.seconds, "params": params,
        "model_built_s": built_s, "load_s": load_s, "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4), "rtf": round(statistics.median(times) / args.seconds, 4),
        "target_s": 0.3 if device.type == "cuda" else 3.0}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
