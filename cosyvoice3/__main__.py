"""Command line: `python -m cosyvoice3 synth ...` - synthesise one text into a wav file."""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import soundfile as sf
import torch

from cosyvoice3.frontend.audio import load_audio

from .errors import CosyVoiceError
from .modes import MODES, ZERO_SHOT
from .pipeline import CosyVoice3
from .spec import SpeechSpec

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def synth(args) -> int:
    model = CosyVoice3.from_pretrained(args.model_dir, device=args.device, dtype=DTYPES[args.dtype])
    audio, sr = load_audio(args.prompt_wav)
    prompt = model.prepare_prompt(audio, sr, args.prompt_text, truncate=True)
    t0 = time.perf_counter()
    spec = SpeechSpec(args.text, args.mode, args.prompt_text, args.instruction, args.seed, args.speed, args.stream)
    chunks = list(model.synthesize(spec, prompt))
    wall = time.perf_counter() - t0
    wav = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    sf.write(args.out, wav, model.sample_rate, subtype="FLOAT")
    seconds = len(wav) / model.sample_rate
    print(json.dumps({"out": args.out, "audio_s": round(seconds, 3), "wall_s": round(wall, 3),
                      "chunks": len(chunks), "rtf": round(wall / seconds, 4) if seconds else None,
                      "demo_model": model.demo}))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cosyvoice3")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("synth", help="synthesise a text in the voice of a prompt recording")
    s.add_argument("--model-dir", required=True)
    s.add_argument("--text", required=True, help="text to speak")
    s.add_argument("--prompt-wav", required=True, help="prompt recording (wav/flac/mp3/ogg; webm/m4a need ffmpeg)")
    s.add_argument("--prompt-text", default="", help="transcript of the prompt (empty: cross-lingual cloning)")
    s.add_argument("--mode", choices=MODES, default=ZERO_SHOT)
    s.add_argument("--instruction", default="", help="preset id/label or free text (instruct mode)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--speed", type=float, default=1.0)
    s.add_argument("--stream", action="store_true", help="run the streaming path (chunks are concatenated)")
    s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    s.add_argument("--dtype", choices=DTYPES, default="fp32")
    s.add_argument("--out", required=True, help="output wav (24 kHz, float32)")
    args = p.parse_args(argv)
    try:
        return synth(args)
    except CosyVoiceError as e:
        print(f"error ({e.code}): {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
