"""Prompt audio in: decoding, resampling, silence trimming and level.

`load_audio` reads a path, raw bytes or a file object with soundfile (wav, flac, ogg/vorbis,
ogg/opus, mp3) and falls back to an `ffmpeg` subprocess for everything else browsers and phones
produce (webm/opus, m4a/aac, ...). The result is always float32 mono in [-1, 1].

`resample` has two methods:
- "reference": the windowed-sinc resampler of `torchaudio.transforms.Resample` with its defaults
  (Hann window, lowpass_filter_width 6, rolloff 0.99, rates reduced by their gcd), written here
  in torch. The prompt front end uses it so our features match the official implementation.
- "soxr": the soxr library, for everything where bit-level agreement does not matter (UI).

This module imports torch only inside the reference resampler, so the app process can decode and
resample uploads with soxr without loading torch.
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioDecodeError

FFMPEG_TIMEOUT_S = 60.0

# torchaudio.transforms.Resample defaults.
LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99

AudioSource = str | Path | bytes | bytearray | BinaryIO


# ---------------------------------------------------------------------------- decoding


def load_audio(source: AudioSource, *, ffmpeg_timeout: float = FFMPEG_TIMEOUT_S) -> tuple[np.ndarray, int]:
    """Decode an audio file into float32 mono samples in [-1, 1] and its sample rate.

    source: a path, the file's bytes, or a readable binary file object.
    Multichannel audio is averaged to mono; integer PCM is scaled to [-1, 1].
    Raises AudioDecodeError (naming every decoder tried) when nothing can read it.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise AudioDecodeError(f"Audio file not found: {path}")
        payload = None
        label = path.name
    elif isinstance(source, (bytes, bytearray)):
        path, payload, label = None, bytes(source), "uploaded audio"
    else:
        path, payload, label = None, source.read(), "uploaded audio"
    if payload is not None and len(payload) == 0:
        raise AudioDecodeError("The audio is empty (0 bytes).")

    failures = []
    try:
        return _read_soundfile(path if path is not None else io.BytesIO(payload))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        failures.append(f"soundfile: {_first_line(e)}")

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        failures.append("ffmpeg: not installed (needed for webm, m4a/aac and similar formats)")
    else:
        try:
            return _read_ffmpeg(ffmpeg, path, payload, ffmpeg_timeout)
        except AudioDecodeError as e:
            failures.append(f"ffmpeg: {e}")
    raise AudioDecodeError(
        f"Could not read {label} as audio: the file is damaged or not in a supported format "
        f"(tried {'; '.join(failures)}).")


def _read_soundfile(source) -> tuple[np.ndarray, int]:
    samples, sample_rate = sf.read(source, dtype="float32", always_2d=True)  # (N, C), ints scaled
    return _to_mono(samples), int(sample_rate)


def _read_ffmpeg(ffmpeg: str, path: Path | None, payload: bytes | None,
                 timeout: float) -> tuple[np.ndarray, int]:
    """Decode with ffmpeg into a Sun AU stream (a header with rate and channels, float32 samples)."""
    command = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error",
               "-i", str(path) if path is not None else "pipe:0",
               "-vn", "-map", "0:a:0", "-c:a", "pcm_f32be", "-f", "au", "pipe:1"]
    try:
        done = subprocess.run(command, input=payload, capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL if payload is None else None)
    except subprocess.TimeoutExpired:
        raise AudioDecodeError(f"decoding took longer than {timeout:.0f} s") from None
    if done.returncode != 0 or not done.stdout:
        message = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioDecodeError(message[-1] if message else f"exit status {done.returncode}")
    try:
        return _read_soundfile(io.BytesIO(done.stdout))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioDecodeError(f"unreadable output ({_first_line(e)})") from None


def _to_mono(samples: np.ndarray) -> np.ndarray:
    """(N, C) -> (N,) float32, channels averaged."""
    if samples.shape[1] == 1:
        return np.ascontiguousarray(samples[:, 0], dtype=np.float32)
    return samples.mean(axis=1, dtype=np.float64).astype(np.float32)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ---------------------------------------------------------------------------- resampling


def resample(wav: np.ndarray, sr_in: int, sr_out: int, method: str = "soxr") -> np.ndarray:
    """Resample mono float audio (N,) from `sr_in` to `sr_out` Hz; returns float32 (M,).

    method "reference" reproduces torchaudio.transforms.Resample(sr_in, sr_out) (defaults) and
    returns ceil(N * sr_out / sr_in) samples; "soxr" uses the soxr library (high quality).
    """
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"resample expects mono audio (N,), got shape {wav.shape}")
    if sr_in <= 0 or sr_out <= 0 or int(sr_in) != sr_in or int(sr_out) != sr_out:
        raise ValueError(f"sample rates must be positive integers, got {sr_in} -> {sr_out}")
    if sr_in == sr_out:
        return wav.copy()
    if method == "reference":
        return _resample_reference(wav, int(sr_in), int(sr_out))
    if method == "soxr":
        return soxr.resample(wav, sr_in, sr_out).astype(np.float32, copy=False)
    raise ValueError(f"unknown resampling method {method!r} (use 'reference' or 'soxr')")


def _resample_reference(wav: np.ndarray, sr_in: int, sr_out: int, block: int = 1 << 16) -> np.ndarray:
    """torchaudio's Hann-windowed sinc resampler, evaluated sparsely and in float64.

    With the rates reduced by their gcd to `orig` -> `new`, output sample j sits at input
    position c = j * orig / new and is sum_n x[n] * h((n - c) * base / orig), where
    base = min(orig, new) * rolloff and h(t) = sinc(t) * cos^2(pi t / (2 * width)) * base / orig
    with t clamped to [-width, width]. torchaudio stores h for every phase j % new over a span
    of 2 * taps + orig inputs and runs a strided conv1d; outside |t| < width its kernel is zero
    (to ~1e-33), so summing over the 2 * taps inputs nearest to c gives the same numbers
    without the dense (new, 2 * taps + orig) kernel, which is huge for coprime rates.
    """
    import torch

    gcd = math.gcd(sr_in, sr_out)
    orig, new = sr_in // gcd, sr_out // gcd
    base = min(orig, new) * ROLLOFF
    taps = math.ceil(LOWPASS_FILTER_WIDTH * orig / base)  # torchaudio's `width`

    # Weights per phase p = j % new: inputs n = floor(c) + d for d in (-taps, taps].
    phase = torch.arange(new, dtype=torch.int64)
    start = (phase * orig) // new                                        # (new,) floor(c) - i * orig
    frac = ((phase * orig) % new).to(torch.float64) / new                # (new,) c - floor(c)
    offsets = torch.arange(-taps + 1, taps + 1, dtype=torch.int64)       # (2 * taps,)
    t = (offsets[None, :].to(torch.float64) - frac[:, None]) * (base / orig)
    t = t.clamp(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)             # (new, 2 * taps)
    window = torch.cos(t * (math.pi / LOWPASS_FILTER_WIDTH / 2)) ** 2
    weights = torch.special.sinc(t) * window * (base / orig)             # (new, 2 * taps)

    n_in = wav.shape[0]
    n_out = -(-n_in * new // orig)                                       # ceil(n_in * new / orig)
    padded = torch.nn.functional.pad(torch.from_numpy(wav).to(torch.float64), (taps, taps))
    out = torch.empty(n_out, dtype=torch.float64)
    for first in range(0, n_out, block):
        j = torch.arange(first, min(first + block, n_out), dtype=torch.int64)
        p = j % new
        centre = (j // new) * orig + start[p]                            # (B,) floor(c)
        index = centre[:, None] + offsets[None, :] + taps                # (B, 2 * taps) into padded
        out[first:first + len(j)] = (padded[index] * weights[p]).sum(dim=1)
    return out.to(torch.float32).numpy()


# ---------------------------------------------------------------------------- level and length


def duration(wav: np.ndarray, sr: int) -> float:
    """Length of `wav` (N,) in seconds."""
    return len(wav) / float(sr)


def peak(wav: np.ndarray) -> float:
    return float(np.max(np.abs(wav))) if len(wav) else 0.0


def rms(wav: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if len(wav) else 0.0


def normalize_level(wav: np.ndarray, peak_level: float = 0.9) -> np.ndarray:
    """Scale `wav` so its peak is `peak_level`; silence (all zeros) is returned unchanged."""
    wav = np.asarray(wav, dtype=np.float32)
    current = peak(wav)
    if current == 0.0:
        return wav.copy()
    return (wav * np.float32(peak_level / current)).astype(np.float32)


def trim_silence(wav: np.ndarray, sr: int, *, top_db: float = 50.0, frame_s: float = 0.02,
                 margin_s: float = 0.1) -> np.ndarray:
    """Cut leading and trailing silence from mono `wav` (N,).

    A frame (`frame_s` long, hopped by half) is silent when its RMS is more than `top_db` below
    the loudest frame's. The first and last loud frames are kept plus `margin_s` of audio on
    each side. Returns a view of `wav`; an all-zero clip comes back empty.
    """
    frame = max(1, int(round(frame_s * sr)))
    hop = max(1, frame // 2)
    if len(wav) <= frame:
        return wav if peak(wav) > 0.0 else wav[:0]
    frames = np.lib.stride_tricks.sliding_window_view(wav, frame)[::hop]   # (F, frame)
    energy = np.mean(np.square(frames, dtype=np.float64), axis=1)          # (F,)
    loudest = energy.max()
    if loudest == 0.0:
        return wav[:0]
    loud = np.flatnonzero(energy >= loudest * 10.0 ** (-top_db / 10.0))
    margin = int(round(margin_s * sr))
    begin = max(0, loud[0] * hop - margin)
    end = min(len(wav), loud[-1] * hop + frame + margin)
    return wav[begin:end]
