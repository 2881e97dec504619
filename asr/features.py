"""The recogniser's front end: 16 kHz audio -> (T, 560) features, as FunASR's `WavFrontend` does.

1. Kaldi fbank (`cosyvoice3.features.mel.kaldi_fbank`): 80 bins, 25 ms Hamming frames every
   10 ms, of the samples at int16 scale (x 32768), no dither (the reference dithers by default;
   that adds noise below the int16 step and makes the features random, so we leave it out).
2. LFR (low frame rate): frame i of the output stacks input frames 6i-3 .. 6i+3 (7 frames, frame
   0 repeated on the left, the last frame repeated on the right): ceil(T / 6) frames of 560.
3. CMVN from `am.mvn` (Kaldi nnet text format): (x + shift) * scale, per dimension.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from cosyvoice3.errors import ModelLoadError
from cosyvoice3.features.mel import KALDI_FRAME, kaldi_fbank

from .config import SenseVoiceConfig

INT16_SCALE = 1 << 15
MAX_CMVN_BYTES = 1 << 20  # the released am.mvn has 11 kB
_VECTOR = re.compile(r"\[([^\]]*)\]")


def fbank(wav_16k: np.ndarray | torch.Tensor, cfg: SenseVoiceConfig) -> torch.Tensor:
    """(N,) float samples in [-1, 1] at cfg.sample_rate -> float32 (T, n_mels)."""
    if (cfg.sample_rate, cfg.frame_length_ms, cfg.frame_shift_ms) != (16000, 25, 10):
        raise ModelLoadError("the recogniser's front end supports 16 kHz audio in 25 ms frames every 10 ms only")
    wav = torch.as_tensor(np.asarray(wav_16k, dtype=np.float64) if not isinstance(wav_16k, torch.Tensor)
                          else wav_16k.double())
    if wav.shape[0] < KALDI_FRAME:
        raise ValueError(f"audio too short for the recogniser: {wav.shape[0]} < {KALDI_FRAME} samples")
    return kaldi_fbank(wav * INT16_SCALE, num_mel_bins=cfg.n_mels, sample_rate=cfg.sample_rate, window=cfg.window)


def stack_frames(feats: torch.Tensor, m: int, n: int) -> torch.Tensor:
    """LFR: (T, F) -> (ceil(T / n), m * F); output frame i is input frames n*i - (m-1)//2 ..
    n*i + m - 1 - (m-1)//2, clamped to the first and last frame."""
    t = feats.shape[0]
    out_frames = -(-t // n)
    left = (m - 1) // 2
    right = max(0, (out_frames - 1) * n + m - (t + left))
    padded = torch.cat([feats[:1].expand(left, -1), feats, feats[-1:].expand(right, -1)])
    windows = padded.unfold(0, m, n)[:out_frames]                          # (T', F, m)
    return windows.transpose(1, 2).reshape(out_frames, m * feats.shape[1])


class CMVN:
    """Global mean/variance normalisation: (x + shift) * scale; both (D,) float32."""

    def __init__(self, shift: torch.Tensor, scale: torch.Tensor):
        if shift.shape != scale.shape or shift.ndim != 1:
            raise ModelLoadError(f"CMVN shift {tuple(shift.shape)} and scale {tuple(scale.shape)} do not match")
        self.shift, self.scale = shift.float(), scale.float()

    @property
    def dim(self) -> int:
        return self.shift.shape[0]

    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        return (feats + self.shift.to(feats.device)) * self.scale.to(feats.device)

    @classmethod
    def from_file(cls, path: str | Path) -> "CMVN":
        """Read `am.mvn`: the vectors after `<AddShift>` and `<Rescale>` (each on a
        `<LearnRateCoef> 0 [ ... ]` line)."""
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"CMVN file not found: {path}")
        if path.stat().st_size > MAX_CMVN_BYTES:
            raise ModelLoadError(f"{path} is {path.stat().st_size} bytes; a CMVN file has at most {MAX_CMVN_BYTES}")
        text = path.read_text(encoding="utf-8", errors="replace")
        vectors = {}
        for tag in ("<AddShift>", "<Rescale>"):
            at = text.find(tag)
            found = _VECTOR.search(text, at) if at >= 0 else None
            if found is None:
                raise ModelLoadError(f"{path}: no {tag} vector")
            try:
                vectors[tag] = torch.tensor([float(v) for v in found.group(1).split()], dtype=torch.float32)
            except ValueError as exc:
                raise ModelLoadError(f"{path}: bad number in the {tag} vector: {exc}") from exc
        return cls(vectors["<AddShift>"], vectors["<Rescale>"])

    def write(self, path: str | Path) -> None:
        """Write the Kaldi nnet text format that `from_file` (and FunASR) read."""
        d = self.dim

        def row(v):
            return " ".join(f"{x:.7g}" for x in v.tolist())

        Path(path).write_text(
            f"<Nnet> \n<Splice> {d} {d}\n[ 0 ]\n<AddShift> {d} {d} \n<LearnRateCoef> 0 [ {row(self.shift)} ]\n"
            f"<Rescale> {d} {d}\n<LearnRateCoef> 0 [ {row(self.scale)} ]\n</Nnet> \n", encoding="utf-8")


def compute_features(wav_16k: np.ndarray | torch.Tensor, cfg: SenseVoiceConfig, cmvn: CMVN) -> torch.Tensor:
    """(N,) 16 kHz samples -> float32 (ceil(T / lfr_n), input_size) normalised LFR features."""
    return cmvn(stack_frames(fbank(wav_16k, cfg), cfg.lfr_m, cfg.lfr_n))
