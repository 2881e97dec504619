"""Where the time of one request goes: LLM token loop, flow, vocoder, each timed alone.

    python bench/profile_stages.py --model-dir D [--device cuda] [--dtype bf16] [--backend auto]

Prints JSON lines: per stage the median wall time over `--runs` (after one warm-up), the LLM also
per token, and the top functions of a cProfile of one LLM loop (host-side overhead). The LLM loop
runs once per `--decode-steps` value (steps sent to the device before their tokens are read back,
`TokenBatch.step(count)`); `llm_join` times the prefill of `n` segments of one voice with and
without the stored prompt prefix (`cosyvoice3.decoding.prefix_store`).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from pathlib import Path

import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import engines  # noqa: E402
from cosyvoice3.decoding.prefix_store import PrefixStore  # noqa: E402
from cosyvoice3.decoding.token_batch import SegmentSpec, TokenBatch  # noqa: E402
from cosyvoice3.spec import SpeechSpec  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def timeit(fn, device, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


@torch.no_grad()
def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=DTYPES, default="bf16")
    p.add_argument("--backend", default="auto")
    p.add_argument("--tokens", type=int, default=250)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--batches", default="1,4,16,64", help="decode batch sizes to time the LLM loop at")
    p.add_argument("--decode-steps", default="1", help="decode steps per host read of the LLM loop, e.g. 1,4")
    p.add_argument("--compile-llm", action="store_true", help="the decode step through torch.compile, then graphs")
    p.add_argument("--llm-kernels", choices=("torch", "triton"), default="torch",
                   help="the graphed decode step: the module's own (torch) or the fused step on Triton kernels")
    args = p.parse_args(argv)
    config = engines.EngineConfig(backend=args.backend, compile_llm=args.compile_llm, llm_kernels=args.llm_kernels)
    model = engines.load_model(args.model_dir, device=args.device, dtype=DTYPES[args.dtype], config=config)
    audio, sr = sf.read(ROOT / "tests" / "golden" / "prompt_24k.wav", dtype="float32")
    prompt = model.prepare_prompt(audio, sr, "a prompt transcript for profiling")
    pt = model.prompt_tensors(prompt)
    ids = model.llm_inputs(SpeechSpec("Profiling every stage of the synthesis pipeline.", prompt_text=prompt.text),
                           "Profiling every stage of the synthesis pipeline.", prompt)
    dev = model.device
    batch_sizes = [int(b) for b in args.batches.split(",")]
    batch = TokenBatch(model.llm, model.config.llm, rows=max(batch_sizes), max_len=1024,
                       steps=model.backends.decode_steps, initial_rows=max(batch_sizes))
    batch.warm()

    def specs(n: int):
        return [(i, SegmentSpec(list(ids[0]), list(ids[1]), [int(t) for t in ids[2]], key=i + 1,
                                forced_tokens=args.tokens)) for i in range(n)]

    def llm(n: int = 1, steps: int = 1):
        """n segments decoding `--tokens` tokens together, `steps` per host read; returns the first one's tokens."""
        got = {}
        for ev in batch.join(specs(n)):
            got.setdefault(ev.owner, []).extend(ev.emitted)
        while batch.active:
            for ev in batch.step(steps):
                got.setdefault(ev.owner, []).extend(ev.emitted)
        return got[0]

    tokens = torch.tensor(llm(), device=dev)[None]
    for steps in [int(k) for k in args.decode_steps.split(",")]:
        for n in batch_sizes:
            t_llm = timeit(lambda: llm(n, steps), dev, args.runs)
            print(json.dumps({"stage": "llm_loop", "batch": n, "decode_steps": steps, "s": round(t_llm, 4),
                              "ms_per_step": round(1000 * t_llm / args.tokens, 3),
                              "tokens_per_s": round(n * args.tokens / t_llm, 1),
                              "backend": model.report.get("llm_decode", {}).get("detail")}), flush=True)
    with_prefixes = TokenBatch(model.llm, model.config.llm, rows=max(batch_sizes), max_len=1024,
                               steps=model.backends.decode_steps, initial_rows=max(batch_sizes),
                               prefixes=PrefixStore(64 << 20))
    for n in batch_sizes:
        for name, joining in (("full", batch), ("after_prefix", with_prefixes)):
            def join():
                joining.join(specs(n))
                for owner in joining.owners:
                    joining.leave(owner)

            t = timeit(join, dev, args.runs)
            print(json.dumps({"stage": "llm_join", "batch": n, "prefill": name, "s": round(t, 5),
                              "prompt_positions": TokenBatch.prompt_length(specs(1)[0][1]),
                              "prefix_positions": 1 + len(ids[0])}), flush=True)
    del with_prefixes
    for name, streaming, finalize, n in (("flow_offline", False, True, args.tokens),
                                         ("flow_first_chunk", True, False, 28 + 3)):
        t = timeit(lambda: model.token2mel(tokens[:, :n], pt, streaming=streaming, finalize=finalize), dev, args.runs)
        print(json.dumps({"stage": name, "tokens": n, "s": round(t, 4)}), flush=True)
    mel = model.token2mel(tokens, pt, streaming=False, finalize=True)
    for name, frames in (("hift_offline", mel.shape[2]), ("hift_first_chunk", 56)):
        t = timeit(lambda: model.mel2wav(mel[:, :, :frames], finalize=frames == mel.shape[2]), dev, args.runs)
        print(json.dumps({"stage": name, "frames": frames, "s": round(t, 4)}), flush=True)
    prof = cProfile.Profile()
    prof.enable()
    llm()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
    print(json.dumps({"stage": "llm_loop_cprofile", "top": buf.getvalue()[-4000:]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
