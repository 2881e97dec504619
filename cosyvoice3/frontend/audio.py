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

from cosyvoice3.errors import AudioDecodeError, BadInputError

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
        label = f"the file {path.name}"
    elif isinstance(source, (bytes, bytearray)):
        path, payload, label = None, bytes(source), "the uploaded audio"
    else:
        path, payload, label = None, source.read(), "the uploaded audio"
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
        f"Could not read {label}: it is damaged or not in a supported audio format "
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


def as_mono_float32(samples: np.ndarray) -> np.ndarray:
    """Samples as a program hands them over (e.g. Gradio's int16 (N, C)) -> float32 mono (N,).

    Integer PCM is scaled to [-1, 1] (int16 / 2^15, int32 / 2^31, uint8 centred on 128).
    A 2-D array is (N, C) or (C, N): the shorter axis is taken as channels and averaged.
    """
    samples = np.asarray(samples)
    if samples.dtype.kind == "u":
        bits = 8 * samples.dtype.itemsize
        samples = (samples.astype(np.float64) - 2.0 ** (bits - 1)) / 2.0 ** (bits - 1)
    elif samples.dtype.kind == "i":
        samples = samples.astype(np.float64) / 2.0 ** (8 * samples.dtype.itemsize - 1)
    elif samples.dtype.kind != "f":
        raise BadInputError(f"audio samples must be numbers, got dtype {samples.dtype}")
    if samples.ndim == 2:
        channels_last = samples.shape[1] <= samples.shape[0]
        return _to_mono(samples if channels_last else samples.T)
    if samples.ndim != 1:
        raise BadInputError(f"audio must be mono (N,) or multichannel (N, C), got shape {samples.shape}")
    return np.ascontiguousarray(samples, dtype=np.float32)


def _first_line(error: Exception) -> str:
    text = str(getattr(error, "error_string", "") or error).strip()  # libsndfile's own words
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


def peak_amplitude(wav: np.ndarray) -> float:
    """Largest absolute sample of `wav` (0 for an empty clip)."""
    return float(np.max(np.abs(wav))) if len(wav) else 0.0


def rms_amplitude(wav: np.ndarray) -> float:
    """Root mean square of `wav` (0 for an empty clip)."""
    return float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if len(wav) else 0.0


def normalize_level(wav: np.ndarray, peak: float = 0.9) -> np.ndarray:
    """Scale `wav` so its largest absolute sample is `peak`; an all-zero clip is returned as is."""
    wav = np.asarray(wav, dtype=np.float32)
    current = peak_amplitude(wav)
    if current == 0.0:
        return wav.copy()
    return (wav * np.float32(peak / current)).astype(np.float32)


def sound_bounds(wav: np.ndarray, sr: int, *, top_db: float = 50.0, frame_s: float = 0.02,
                 margin_s: float = 0.1) -> tuple[int, int]:
    """Sample range [begin, end) of mono `wav` (N,) without its leading and trailing silence.

    A frame (`frame_s` long, hopped by half) is silent when its energy is more than `top_db`
    below the loudest frame's. The range spans the first to the last loud frame plus `margin_s`
    on each side; it is (0, 0) for an all-zero clip.
    """
    frame = max(1, int(round(frame_s * sr)))
    hop = max(1, frame // 2)
    if len(wav) <= frame:
        return (0, len(wav)) if peak_amplitude(wav) > 0.0 else (0, 0)
    energy_sum = np.concatenate([[0.0], np.cumsum(np.square(wav, dtype=np.float64))])  # (N + 1,)
    starts = np.arange(0, len(wav) - frame + 1, hop)                                 # (F,)
    energy = (energy_sum[starts + frame] - energy_sum[starts]) / frame               # (F,)
    loudest = energy.max()
    if loudest <= 0.0:
        return 0, 0
    loud = np.flatnonzero(energy >= loudest * 10.0 ** (-top_db / 10.0))
    margin = int(round(margin_s * sr))
    return max(0, int(starts[loud[0]]) - margin), min(len(wav), int(starts[loud[-1]]) + frame + margin)


def trim_silence(wav: np.ndarray, sr: int, **options) -> np.ndarray:
    """`wav` (N,) without leading and trailing silence (a view; see `sound_bounds` for options)."""
    begin, end = sound_bounds(wav, sr, **options)
    return wav[begin:end]
