"""FP16 / BF16 against FP32, stage by stage, on the same inputs.

    python bench/precision_report.py --model-dir D | --full-size [--device cuda]

Loads the model once per precision and feeds every stage the FP32 stage's inputs, so each number
is the error that stage adds: LLM first-step logits (and whether the greedy tokens agree), the DiT
estimator output, the flow mel for the same tokens, the HiFT audio for the same mel, and end to end
(same tokens -> mel -> audio). Prints one JSON line per (precision, stage).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosyvoice3.decoding.token_batch import SegmentSpec, decode_alone  # noqa: E402
from cosyvoice3.pipeline import CosyVoice3  # noqa: E402
from cosyvoice3.spec import SpeechSpec  # noqa: E402
from cosyvoice3.tools.demo import write_demo_model  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def err(a: torch.Tensor, b: torch.Tensor) -> dict:
    a, b = a.double().cpu(), b.double().cpu()
    d = (a - b).abs()
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()), "ref_max": float(b.abs().max()),
            "rel_l2": float(d.norm() / b.norm().clamp_min(1e-12)), "finite": bool(torch.isfinite(a).all())}


@torch.no_grad()
def stage_outputs(model: CosyVoice3, prompt, tokens: torch.Tensor, dit_inputs: dict, mel_in: torch.Tensor) -> dict:
    p = model.prompt_tensors(prompt)
    ids = model.llm_inputs(SpeechSpec("Checking the precision of every stage.", prompt_text=prompt.text),
                           "Checking the precision of every stage.", prompt)
    spec = SegmentSpec(list(ids[0]), list(ids[1]), [int(t) for t in ids[2]], greedy=True, forced_tokens=50)
    rules, trace = decode_alone(model.llm, model.config.llm, spec, trace=True)
    est = model.flow.estimator
    cast = {k: v.to(model.device, model.dtype) for k, v in dit_inputs.items()}
    return {
        "llm_first_logits": trace[0].logits.float(),
        "llm_tokens": torch.tensor(rules.tokens),
        "dit": est(**cast).float(),
        "flow_mel": model.token2mel(tokens, p, streaming=False, finalize=True).float(),
        "hift_audio": model.mel2wav(mel_in, finalize=True).float(),
        "e2e_audio": model.mel2wav(model.token2mel(tokens, p, streaming=False, finalize=True), finalize=True).float(),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-dir")
    src.add_argument("--full-size", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precisions", default="fp16,bf16")
    p.add_argument("--tokens", type=int, default=250)
    args = p.parse_args(argv)
    model_dir = args.model_dir
    if args.full_size:
        model_dir = Path(tempfile.mkdtemp(prefix="cosyfast-full-")) / "model"
        write_demo_model(model_dir, full_size=True, device=args.device)
    audio, sr = sf.read(ROOT / "tests" / "golden" / "prompt_24k.wav", dtype="float32")
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 6561, (1, args.tokens), generator=gen).to(args.device)

    ref_model = CosyVoice3.from_pretrained(model_dir, device=args.device, dtype=torch.float32)
    prompt = ref_model.prepare_prompt(audio, sr, "a prompt transcript")
    T = 2 * (len(prompt.speech_tokens) + args.tokens)
    dim = ref_model.config.flow.dit.mel_dim
    dit_inputs = {"x": torch.randn(2, dim, T, generator=gen), "mask": torch.ones(2, 1, T),
                  "mu": torch.randn(2, dim, T, generator=gen), "t": torch.tensor([0.3, 0.3]),
                  "spks": torch.randn(2, dim, generator=gen), "cond": torch.randn(2, dim, T, generator=gen)}
    mel_in = ref_model.token2mel(tokens, ref_model.prompt_tensors(prompt), streaming=False, finalize=True)
    ref = stage_outputs(ref_model, prompt, tokens, dit_inputs, mel_in)
    del ref_model
    for name in args.precisions.split(","):
        model = CosyVoice3.from_pretrained(model_dir, device=args.device, dtype=DTYPES[name])
        out = stage_outputs(model, prompt, tokens, dit_inputs, mel_in)
        for stage, value in out.items():
            if stage == "llm_tokens":
                row = {"same_greedy_tokens": int((value == ref[stage]).sum()), "of": len(ref[stage])}
            else:
                row = err(value, ref[stage])
            print(json.dumps({"precision": name, "stage": stage, **row}), flush=True)
        del model
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
