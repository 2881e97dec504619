"""The demo recogniser: a random SenseVoice-Small directory in the released file layout.

    python -m asr.demo DIR [--full-size] [--seed N]

Writes config.yaml, model.pt (random weights, the released key names), am.mvn, a sentencepiece
BPE model under the released name (trained here on a few sentences, with SenseVoice's tags as
symbols of their own) and configuration.json, plus a marker file that says it is not a real
recogniser. The tiny default builds in about a second and is what the tests and the demo app
use; its transcripts are random text. `--full-size` has the released hyperparameters (234 M
parameters, 936 MB, a 25055-piece vocabulary) for timing. Same seed -> same files.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import torch

from cosyvoice3.files import atomic_write
from cosyvoice3.tools.once import ensure_built, marker_says

from .config import (
    BPE_NAME,
    CHECKPOINT_NAME,
    CMVN_NAME,
    CONFIG_NAME,
    CONFIGURATION_NAME,
    DEMO_MARKER,
    SenseVoiceConfig,
    render_config,
)
from .decoding import TAGS
from .encoder import SenseVoiceSmall
from .features import CMVN

RELEASED_VOCAB = 25055
TINY_VOCAB = 160
CORPUS = (
    "hello this is a short recording of my voice for cloning",
    "the quick brown fox jumps over the lazy dog",
    "please read the sentence clearly and slowly",
    "今天天气很好我们一起去公园散步吧",
    "这是一个用于测试的语音识别模型",
    "今日はいい天気ですね",
    "안녕하세요 만나서 반갑습니다",
    "我哋今日去饮茶啦",
)


def tiny_config() -> SenseVoiceConfig:
    return SenseVoiceConfig(output_size=32, attention_heads=2, linear_units=64, num_blocks=2, tp_blocks=1)


def write_tokenizer(path: Path, full_size: bool) -> int:
    """Train a BPE model on CORPUS (tags as user symbols; id 0 is <unk>, the CTC blank). The
    full-size one is filled up to the released 25055 pieces with CJK characters."""
    import sentencepiece as spm

    symbols = [f"<|{t}|>" for t in TAGS]
    if full_size:
        symbols += [chr(0x4E00 + i) for i in range(RELEASED_VOCAB - len(symbols) - 100)]
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 4), model_writer=proto, model_type="bpe",
        vocab_size=RELEASED_VOCAB if full_size else TINY_VOCAB, hard_vocab_limit=False,
        user_defined_symbols=symbols, character_coverage=1.0, unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
        num_threads=1, minloglevel=2)
    path.write_bytes(proto.getvalue())
    return int(spm.SentencePieceProcessor(model_proto=proto.getvalue()).vocab_size())


@torch.no_grad()
def build_model(cfg: SenseVoiceConfig, vocab_size: int, seed: int) -> SenseVoiceSmall:
    torch.manual_seed(seed)
    return SenseVoiceSmall(cfg, vocab_size).eval()


def write_demo_recognizer(out_dir: str | Path, full_size: bool = False, seed: int = 0) -> Path:
    """Write the demo recogniser directory; returns its path. Existing files are overwritten."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = SenseVoiceConfig() if full_size else tiny_config()
    vocab = write_tokenizer(out / BPE_NAME, full_size)
    if full_size and vocab != RELEASED_VOCAB:
        raise RuntimeError(f"the full-size tokenizer has {vocab} pieces, not {RELEASED_VOCAB}")
    (out / CONFIG_NAME).write_text(render_config(cfg, "cosyfast demo recogniser (random weights: random text)"),
                                   encoding="utf-8")
    generator = torch.Generator().manual_seed(seed)
    shift = -12.0 + torch.randn(cfg.input_size, generator=generator)  # about the released means at int16 scale
    CMVN(shift, torch.full((cfg.input_size,), 0.15)).write(out / CMVN_NAME)
    model = build_model(cfg, vocab, seed)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_write(out / CHECKPOINT_NAME, lambda f: torch.save(state, f))
    (out / CONFIGURATION_NAME).write_text(json.dumps({
        "framework": "pytorch", "task": "auto-speech-recognition", "model": {"type": "funasr"},
        "file_path_metas": {"init_param": CHECKPOINT_NAME, "config": CONFIG_NAME,
                            "tokenizer_conf": {"bpemodel": BPE_NAME}, "frontend_conf": {"cmvn_file": CMVN_NAME}},
    }, indent=2) + "\n")
    (out / DEMO_MARKER).write_text(json.dumps({"seed": seed, "full_size": full_size,
                                               "note": "random weights: the transcripts are random text"}) + "\n")
    return out


def ensure_demo_recognizer(out_dir: str | Path, seed: int = 0) -> Path:
    """The tiny demo recogniser in `out_dir`, built once (built aside, then renamed into place)."""
    return ensure_built(out_dir, lambda out: marker_says(out, DEMO_MARKER, seed, (CHECKPOINT_NAME, BPE_NAME)),
                        lambda tmp: write_demo_recognizer(tmp, seed=seed))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m asr.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", help="directory to write (created if missing)")
    p.add_argument("--full-size", action="store_true", help="the released hyperparameters (936 MB)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = write_demo_recognizer(args.out_dir, full_size=args.full_size, seed=args.seed)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(json.dumps({"model_dir": str(out), "full_size": args.full_size, "bytes": size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
