"""Engine timings and the end-to-end effect of reduced precision; prints one JSON line per result.

    python bench/engines_bench.py --model-dir D [--device cuda] [--backend auto] [--tokens 250]

1. `module`: each module at realistic sizes on every backend that sets up here (as
   `python -m engines check`, larger shapes): median milliseconds of 5 calls after a warm-up, and
   the error relative to PyTorch FP32.
2. `e2e`: flow (prompt 75 tokens + `--tokens` new ones, 10 Euler steps) and HiFT on the same
   inputs, once with the model's PyTorch FP32 modules and once with the backends `build_backends`
   picks: wall time of each, and the mel and audio differences (max |diff|, and the audio's
   signal-to-difference ratio in dB).
The LLM decode step at several batch sizes is timed by bench/profile_stages.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.__main__ import _candidates, _make, load_model  # noqa: E402
from engines.runner import BackendUnavailable, relative_error  # noqa: E402
from engines.selection import EngineConfig, _Builder, _reference, _run_device, build_backends, module_defs  # noqa: E402
from engines.trt_backend import BuildFailed  # noqa: E402

SIZES = {
    "dit": ({"batch": 2, "frames": 200, "chunk": 50}, {"batch": 2, "frames": 650, "chunk": 0},
            {"batch": 16, "frames": 650, "chunk": 0}),
    "hift": ({"batch": 1, "frames": 500},),
    "llm_prefill": ({"batch": 1, "length": 200, "slots": 1024},),
    "llm_decode": ({"batch": 1, "slots": 1024}, {"batch": 16, "slots": 1024}),
    "campplus": ({"T": 1000},),
    "speech_tokenizer": ({"T": 1000},),
}


def out(**kw):
    print(json.dumps(kw, default=str), flush=True)


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats=5):
    result = fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return result, 1000 * statistics.median(times)


def bench_modules(model, config):
    for name, mdef in module_defs(model, config.modules).items():
        device = _run_device(model, mdef)
        builder = _Builder(config, model.model_dir, device, lambda *a: None)
        reference = _reference(mdef, device if mdef.wrapper is not None else torch.device("cpu"))
        runners = [("torch", "reference", reference)]
        for backend, precision in _candidates(builder, mdef):
            try:
                runners.append((backend, precision, _make(builder, mdef, backend, precision)))
            except (BackendUnavailable, BuildFailed) as e:
                out(kind="module", module=name, backend=backend, precision=precision, error=str(e))
        for sizes in SIZES[name]:
            ex = mdef.example(sizes, device)
            ref, ref_ms = timed(lambda: reference.run({k: v.clone() for k, v in ex.items()}))
            for backend, precision, runner in runners:
                try:
                    res, ms = timed(lambda: runner.run({k: v.clone() for k, v in ex.items()}))
                except Exception as e:  # noqa: BLE001 - a shape outside a profile, an engine failure
                    out(kind="module", module=name, backend=backend, precision=precision, sizes=sizes,
                        error=f"{type(e).__name__}: {e}")
                    continue
                out(kind="module", module=name, backend=backend, precision=runner.info.precision,
                    detail=runner.info.detail, sizes=sizes, ms=round(ms, 3), speedup=round(ref_ms / ms, 2),
                    max_err=relative_error(res, ref))


def synth(model, tokens, prompt_tokens, prompt_mel, embedding, noise, backends=None):
    mel = model.flow.inference(tokens, prompt_tokens, prompt_mel, embedding, streaming=False, finalize=True,
                               noise_source=noise, estimator=backends.estimator if backends else None)
    wav, _ = model.hift.inference(mel.float(), finalize=True, stack=backends.vocoder if backends else None)
    return mel, wav


def bench_e2e(model, config, n_tokens):
    from cosyvoice3.nn.noise import FixedNoise

    device = model.device
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 6561, (1, n_tokens), generator=g).to(device)
    prompt_tokens = torch.randint(0, 6561, (1, 75), generator=g).to(device)
    prompt_mel = (torch.randn(1, 150, 80, generator=g) - 5).to(device)
    embedding = torch.randn(1, 192, generator=g).to(device)
    noise = FixedNoise(model.config)
    args = (tokens, prompt_tokens, prompt_mel, embedding, noise)
    (mel_ref, wav_ref), ref_ms = timed(lambda: synth(model, *args), repeats=3)
    backends = build_backends(model, config=config)
    report = backends.report
    (mel, wav), ms = timed(lambda: synth(model, *args, backends=backends), repeats=3)
    diff = (wav - wav_ref).float()
    snr = 10 * torch.log10(wav_ref.float().pow(2).mean() / diff.pow(2).mean().clamp(min=1e-20))
    out(kind="e2e", tokens=n_tokens, audio_s=wav.shape[-1] / 24000,
        engines={k: f"{v['backend']}/{v['precision']}" for k, v in report.items()},
        ms_torch_fp32=round(ref_ms, 1), ms_engines=round(ms, 1), speedup=round(ref_ms / ms, 2),
        mel_max_abs_diff=float((mel - mel_ref).abs().max()), mel_ref_max=float(mel_ref.abs().max()),
        audio_max_abs_diff=float(diff.abs().max()), audio_snr_db=round(float(snr), 1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backend", default="auto")
    p.add_argument("--precision", default=None)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--modules", default="dit,hift,llm_prefill,llm_decode")
    p.add_argument("--tokens", type=int, default=250)
    p.add_argument("--skip-modules", action="store_true", help="only the end-to-end runs")
    args = p.parse_args(argv)
    config = EngineConfig(backend=args.backend, precision=args.precision, cache_dir=args.cache_dir,
                          modules=tuple(args.modules.split(",")))
    model = load_model(args.model_dir, args.device)
    out(kind="device", device=str(model.device),
        gpu=torch.cuda.get_device_name() if model.device.type == "cuda" else "none", torch=torch.__version__)
    if not args.skip_modules:
        bench_modules(model, config)
    bench_e2e(model, config, args.tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())
