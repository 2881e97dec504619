"""A loaded recogniser: `Recognizer.from_pretrained(dir)` and `recognize(wav_16k) -> Transcription`.

Loading reads the released directory as it is: the network is built on the meta device and
`model.pt` (read with `weights_only=True`) is assigned into it after a strict key and shape
check; the vocabulary size is the tokenizer's, so a tokenizer that does not fit the checkpoint is
a load error, not garbled text. Recognition: features (fbank, LFR, CMVN), the four task queries,
the encoder, CTC greedy decoding, sentencepiece, tags parsed out. Needs torch, numpy, pyyaml and
sentencepiece only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cosyvoice3.checkpoint import load_strict, read_state_dict
from cosyvoice3.errors import ModelLoadError, TooLongError

from .config import BPE_NAME, CHECKPOINT_NAME, CMVN_NAME, DEMO_MARKER, SenseVoiceConfig, load_config
from .decoding import Tokenizer, ctc_greedy, parse_rich_text, query_ids
from .encoder import SenseVoiceSmall
from .features import CMVN, compute_features

MAX_SECONDS = 60.0  # longest audio one call recognises (features and attention grow with it)

ProgressFn = Callable[[str, float, str], None]


@dataclass
class Transcription:
    """text: the transcript (tags removed); language: "zh", "en", "yue", "ja", "ko", "nospeech"
    or "" (none recognised); emotion / event: SenseVoice's tags ("NEUTRAL", "Speech", ...);
    raw: the decoded text with its tags; audio_s: seconds recognised; elapsed_s: time taken."""

    text: str
    language: str
    emotion: str = ""
    event: str = ""
    raw: str = ""
    audio_s: float = 0.0
    elapsed_s: float = 0.0


class Recognizer:
    def __init__(self, config: SenseVoiceConfig, model: SenseVoiceSmall, cmvn: CMVN, tokenizer: Tokenizer,
                 device: torch.device, dtype: torch.dtype, model_dir: Path | None = None, demo: bool = False):
        if cmvn.dim != config.input_size:
            raise ModelLoadError(f"the CMVN file has {cmvn.dim} dimensions; the model reads {config.input_size}")
        self.config, self.model, self.cmvn, self.tokenizer = config, model, cmvn, tokenizer
        self.device, self.dtype = device, dtype
        self.model_dir, self.demo = model_dir, demo

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, progress: ProgressFn | None = None) -> "Recognizer":
        model_dir = Path(model_dir)
        report = progress or (lambda stage, fraction, message="": None)
        if not model_dir.is_dir():
            raise ModelLoadError(f"recogniser directory not found: {model_dir}")
        config = load_config(model_dir)
        tokenizer = Tokenizer.from_file(model_dir / BPE_NAME)
        cmvn = CMVN.from_file(model_dir / CMVN_NAME)
        report("recognizer", 0.2, f"loading {CHECKPOINT_NAME}")
        model = load_model(model_dir / CHECKPOINT_NAME, config, tokenizer.vocab_size, device, dtype)
        report("recognizer", 1.0, "recogniser loaded")
        return cls(config, model, cmvn, tokenizer, torch.device(device), dtype, model_dir,
                   demo=(model_dir / DEMO_MARKER).is_file())

    def to(self, device: str | torch.device) -> "Recognizer":
        """Move the network to `device` (in place); returns self."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def info(self) -> dict:
        return {"device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                "demo": self.demo, "model_dir": str(self.model_dir or ""), "vocab_size": self.tokenizer.vocab_size}

    @torch.inference_mode()
    def recognize(self, wav_16k: np.ndarray, language: str = "auto", itn: bool = True) -> Transcription:
        """Transcribe mono float audio (N,) at 16 kHz. `language` is a hint ("auto" detects it);
        `itn` asks for punctuation and digits. Raises TooLongError past MAX_SECONDS."""
        started = time.perf_counter()
        seconds = len(wav_16k) / self.config.sample_rate
        if seconds > MAX_SECONDS:
            raise TooLongError(f"the audio is {seconds:.1f} s; the recogniser takes at most {MAX_SECONDS:g} s")
        queries = torch.tensor([query_ids(language, itn)], device=self.device)
        features = compute_features(wav_16k, self.config, self.cmvn).to(self.device, self.dtype)[None]
        logits = self.model(features, queries)[0]                          # (4 + T, V)
        rich = parse_rich_text(self.tokenizer.decode(ctc_greedy(logits)))
        return Transcription(rich.text, rich.language, rich.emotion, rich.event, rich.raw,
                             audio_s=round(seconds, 3), elapsed_s=time.perf_counter() - started)


def load_model(path: str | Path, config: SenseVoiceConfig, vocab_size: int, device="cpu",
               dtype: torch.dtype = torch.float32) -> SenseVoiceSmall:
    """Build `SenseVoiceSmall` without random init and load `model.pt` strictly."""
    with torch.device("meta"):
        model = SenseVoiceSmall(config, vocab_size)
    model = model.to(dtype=dtype).to_empty(device=device)
    load_strict(model, read_state_dict(path), path)
    return model.eval().requires_grad_(False)
