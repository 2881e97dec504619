"""End-to-end synthesis speed of one request, in the forced-length setup of the official measurement.

    python bench/bench_synthesis.py --model-dir D | --full-size [--device cuda] [--dtype bf16]
        [--backend torch|auto] [--tokens 250] [--runs 3] [--official official_bench.json]

Random weights never emit a stop token on purpose, so the LLM is forced to emit exactly
`--tokens` tokens (250 = 10 s of audio). One JSON line per (mode, run) and a summary line
(medians) are printed. The first run of each mode is a warm-up (CUDA graph capture, cuDNN
autotuning) and is reported separately. `--official` names the JSON that the official
implementation's runner (shared/anchors/official-cv3/official_bench.py) wrote in the same call on
the same machine: the summary then prints both sides and the ratios. No figure of another run is
ever used.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import engines  # noqa: E402
from cosyvoice3.pipeline import CosyVoice3, SynthesisRequest  # noqa: E402
from cosyvoice3.spec import SpeechSpec  # noqa: E402
from cosyvoice3.tools.demo import write_demo_model  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TEXT = "Benchmarking the speed of speech synthesis with a forced number of speech tokens."


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_job(model: CosyVoice3, prompt, tokens: int, stream: bool, seed: int) -> dict:
    """Run one request; wall time, first-chunk latency and time per kind of step."""
    sync(model.device)
    t0 = time.perf_counter()
    job = model.start(SynthesisRequest(SpeechSpec(TEXT, prompt_text=prompt.text, seed=seed, stream=stream), prompt,
                                       forced_tokens=tokens))
    first, samples, chunks = None, 0, 0
    while not job.done:
        out = job.step()
        if out:
            sync(model.device)
            for c in out:
                if first is None and len(c.pcm):
                    first = time.perf_counter() - t0
                samples += len(c.pcm)
                chunks += 1
    sync(model.device)
    wall = time.perf_counter() - t0
    audio = samples / model.sample_rate
    return {"stream": stream, "wall_s": round(wall, 4), "first_chunk_s": round(first or wall, 4),
            "audio_s": round(audio, 3), "rtf": round(wall / audio, 4), "chunks": chunks,
            "segments": len(job.segments), "tokens": job.stats["speech_tokens"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-dir")
    src.add_argument("--full-size", action="store_true", help="build a full-size random model in a temp dir")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=DTYPES, default="bf16" if torch.cuda.is_available() else "fp32")
    p.add_argument("--backend", default="torch")
    p.add_argument("--tokens", type=int, default=250)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--prompt-wav", default=str(ROOT / "tests" / "golden" / "prompt_24k.wav"))
    p.add_argument("--official", help="official_bench.json of the official implementation, from the same call")
    args = p.parse_args(argv)

    model_dir = args.model_dir
    if args.full_size:
        model_dir = Path(tempfile.mkdtemp(prefix="cosyfast-full-")) / "model"
        t = time.perf_counter()
        write_demo_model(model_dir, full_size=True, device=args.device)
        print(json.dumps({"event": "built_full_size_model", "seconds": round(time.perf_counter() - t, 1)}), flush=True)
    t = time.perf_counter()
    model = engines.load_model(model_dir, device=args.device, dtype=DTYPES[args.dtype], backend=args.backend)
    load_s = time.perf_counter() - t
    audio, sr = sf.read(args.prompt_wav, dtype="float32")
    prompt = model.prepare_prompt(audio, sr, "a prompt transcript for the benchmark")
    info = {"device": torch.cuda.get_device_name() if model.device.type == "cuda" else "cpu",
            "dtype": args.dtype, "backend": args.backend, "tokens": args.tokens, "load_s": round(load_s, 2),
            "backends": {k: f"{v.get('backend')}/{v.get('precision')}" for k, v in model.report.items()}}
    print(json.dumps({"event": "loaded", **info}), flush=True)
    summary = dict(info)
    for stream in (False, True):
        warm = timed_job(model, prompt, args.tokens, stream, seed=0)
        print(json.dumps({"event": "warmup", **warm}), flush=True)
        runs = [timed_job(model, prompt, args.tokens, stream, seed=i + 1) for i in range(args.runs)]
        for r in runs:
            print(json.dumps({"event": "run", **r}), flush=True)
        key = "stream" if stream else "offline"
        summary[f"{key}_wall_s"] = statistics.median(r["wall_s"] for r in runs)
        summary[f"{key}_rtf"] = statistics.median(r["rtf"] for r in runs)
        summary[f"{key}_first_chunk_s"] = statistics.median(r["first_chunk_s"] for r in runs)
        summary[f"{key}_audio_s"] = runs[0]["audio_s"]
    if torch.cuda.is_available() and model.device.type == "cuda":
        summary["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    if args.official:
        official = _official(Path(args.official))
        summary["official"] = official
        if "offline_total_s" in official:
            summary["speedup_vs_official_offline"] = round(official["offline_total_s"] / summary["offline_wall_s"], 1)
        if "stream_first_s" in official:
            summary["speedup_vs_official_first_chunk"] = round(official["stream_first_s"]
                                                               / summary["stream_first_chunk_s"], 1)
    print(json.dumps({"event": "summary", **summary}), flush=True)
    return 0


def _official(path: Path) -> dict:
    """The official run's figures (fp32), as its runner wrote them: offline and streaming."""
    data = json.loads(path.read_text())
    out = {}
    for key, value in data.items():
        if not isinstance(value, dict):
            continue
        mode = "stream" if "stream" in key else "offline"
        if "fp32" in key or len(data) <= 2:
            out[f"{mode}_total_s"] = value.get("total_s")
            out[f"{mode}_first_s"] = value.get("first_s")
            out[f"{mode}_rtf"] = value.get("rtf")
    return out


if __name__ == "__main__":
    sys.exit(main())
