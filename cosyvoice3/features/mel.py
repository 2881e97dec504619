"""Acoustic features of the prompt front end, computed the way the official pipeline does.

- `kaldi_fbank` / `campplus_input`: the 80-bin Kaldi filter bank that CAM++ (the speaker
  encoder) reads, as `torchaudio.compliance.kaldi.fbank(num_mel_bins=80, dither=0)` computes it,
  then mean-normalised over time.
- `whisper_log_mel`: the 128-bin log-mel of `whisper.log_mel_spectrogram`, the speech tokenizer's
  input.
- `prompt_mel`: the 80-bin, 50 Hz log-mel of 24 kHz audio (Matcha-TTS `mel_spectrogram`), the
  flow's prompt features.
- the two mel filter banks behind them (Kaldi's and librosa's Slaney one), built in numpy.

Everything is computed in float64 and returned as float32 torch tensors. Inputs are mono
waveforms (N,) as numpy arrays or tensors, at the sample rate each function names.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from cosyvoice3.config import MelConfig

FLOAT32_EPS = float(np.finfo(np.float32).eps)

# Kaldi fbank defaults (torchaudio.compliance.kaldi) at 16 kHz.
KALDI_FRAME = 400            # 25 ms
KALDI_SHIFT = 160            # 10 ms
KALDI_FFT = 512              # frame rounded up to a power of two
KALDI_PREEMPHASIS = 0.97
KALDI_LOW_HZ = 20.0

# whisper.audio constants.
WHISPER_N_FFT = 400
WHISPER_HOP = 160


def _as_float64(wav) -> torch.Tensor:
    """A float64 copy of a mono waveform given as a numpy array or a tensor."""
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().to("cpu", torch.float64)
    else:
        wav = torch.from_numpy(np.array(wav, dtype=np.float64))
    if wav.ndim != 1:
        raise ValueError(f"expected a mono waveform (N,), got shape {tuple(wav.shape)}")
    return wav


# ---------------------------------------------------------------------------- filter banks


@lru_cache(maxsize=8)
def kaldi_mel_banks(num_bins: int = 80, fft_size: int = KALDI_FFT, sample_rate: int = 16000,
                    low_hz: float = KALDI_LOW_HZ, high_hz: float = 0.0) -> np.ndarray:
    """Kaldi's triangular mel filters (mel = 1127 ln(1 + f / 700)), float64 (num_bins, fft_size // 2 + 1).

    The triangles are equally spaced in mel between `low_hz` and `high_hz` (<= 0 means relative
    to Nyquist) and evaluated on FFT bins 0 .. fft_size/2 - 1; the Nyquist bin gets weight 0.
    """
    nyquist = sample_rate / 2.0
    if high_hz <= 0.0:
        high_hz += nyquist

    def mel(hz):
        return 1127.0 * np.log(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)

    mel_low, mel_high = mel(low_hz), mel(high_hz)
    delta = (mel_high - mel_low) / (num_bins + 1)
    edges = mel_low + delta * np.arange(num_bins + 2)                      # (num_bins + 2,)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bin_mel = mel(np.arange(fft_size // 2) * (sample_rate / fft_size))[None, :]
    up = (bin_mel - left) / (centre - left)
    down = (right - bin_mel) / (right - centre)
    banks = np.maximum(0.0, np.minimum(up, down))                          # (num_bins, fft_size // 2)
    banks = np.pad(banks, ((0, 0), (0, 1)))
    banks.flags.writeable = False
    return banks


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3.0)
    log_step = math.log(6.4) / 27.0
    knee_mel = 1000.0 / (200.0 / 3.0)
    logarithmic = knee_mel + np.log(np.maximum(hz, 1e-10) / 1000.0) / log_step
    return np.where(hz >= 1000.0, logarithmic, linear)


def _slaney_mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * (200.0 / 3.0)
    log_step = math.log(6.4) / 27.0
    knee_mel = 1000.0 / (200.0 / 3.0)
    logarithmic = 1000.0 * np.exp(log_step * (mel - knee_mel))
    return np.where(mel >= knee_mel, logarithmic, linear)


@lru_cache(maxsize=8)
def slaney_mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                       fmax: float | None = None) -> np.ndarray:
    """librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax) with its defaults (Slaney scale,
    Slaney area normalisation): float64 (n_mels, n_fft // 2 + 1). fmax None means sr / 2.
    """
    if fmax is None:
        fmax = sample_rate / 2.0
    fft_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)                  # (F,)
    mel_edges = np.linspace(_hz_to_slaney_mel(fmin), _hz_to_slaney_mel(fmax), n_mels + 2)
    edges_hz = _slaney_mel_to_hz(mel_edges)                                       # (n_mels + 2,)
    widths = np.diff(edges_hz)                                                    # (n_mels + 1,)
    ramps = edges_hz[:, None] - fft_hz[None, :]                                   # (n_mels + 2, F)
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    filters = np.maximum(0.0, np.minimum(rising, falling))                        # (n_mels, F)
    filters *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    filters.flags.writeable = False
    return filters


# ---------------------------------------------------------------------------- CAM++ input


def kaldi_fbank(wav_16k, num_mel_bins: int = 80, sample_rate: int = 16000, window: str = "povey") -> torch.Tensor:
    """Kaldi log-mel filter bank of a float waveform, as torchaudio.compliance.kaldi.fbank with
    num_mel_bins=80, dither=0, sample_frequency=16000 and its other defaults (window_type
    "povey", or "hamming" as the speech recogniser's front end asks).

    wav_16k: (N,) float samples (at whatever scale the caller wants; Kaldi tools feed int16
    scale), N >= 400.
    Returns float32 (T, num_mel_bins), T = 1 + (N - 400) // 160 (snip_edges).
    Per frame: DC removal, pre-emphasis 0.97 (first sample against itself), Povey window
    (Hann^0.85) or Hamming (0.54 - 0.46 cos), zero pad to 512, power spectrum, mel filters
    20 Hz .. Nyquist, ln with the float32 epsilon as floor.
    """
    wav = _as_float64(wav_16k)
    if wav.shape[0] < KALDI_FRAME:
        raise ValueError(f"audio too short for a filter bank: {wav.shape[0]} < {KALDI_FRAME} samples")
    frames = wav.unfold(0, KALDI_FRAME, KALDI_SHIFT)                           # (T, 400)
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)               # x[n-1], x[-1] := x[0]
    frames = frames - KALDI_PREEMPHASIS * previous
    spectrum = torch.fft.rfft(frames * _kaldi_window(window), n=KALDI_FFT)      # (T, 257)
    power = spectrum.real ** 2 + spectrum.imag ** 2
    banks = torch.tensor(kaldi_mel_banks(num_mel_bins, KALDI_FFT, sample_rate))  # (80, 257)
    energies = power @ banks.T                                                 # (T, 80)
    return energies.clamp(min=FLOAT32_EPS).log().to(torch.float32)


def _kaldi_window(kind: str) -> torch.Tensor:
    """Kaldi's analysis windows over one 400-sample frame (symmetric), float64."""
    if kind == "povey":
        return torch.hann_window(KALDI_FRAME, periodic=False, dtype=torch.float64) ** 0.85
    if kind == "hamming":
        return torch.hamming_window(KALDI_FRAME, periodic=False, alpha=0.54, beta=0.46, dtype=torch.float64)
    raise ValueError(f"unknown window {kind!r} (povey or hamming)")


def campplus_input(wav_16k) -> torch.Tensor:
    """CAM++ input: Kaldi fbank minus its mean over time. wav_16k (N,) -> float32 (1, T, 80)."""
    fbank = kaldi_fbank(wav_16k).to(torch.float64)                                 # (T, 80)
    return (fbank - fbank.mean(dim=0, keepdim=True)).to(torch.float32)[None]


# ---------------------------------------------------------------------------- speech tokenizer input


def whisper_log_mel(wav_16k, n_mels: int = 128) -> torch.Tensor:
    """Whisper's log-mel spectrogram (whisper.log_mel_spectrogram(audio, n_mels)).

    wav_16k: (N,) float samples at 16 kHz, N > 200.
    Returns float32 (n_mels, N // 160): STFT n_fft 400, hop 160, periodic Hann, centred with
    reflect padding, last frame dropped; power; Slaney mel filters (0 .. 8 kHz);
    log10(clamp 1e-10); floored at (max - 8); then (x + 4) / 4.
    """
    wav = _as_float64(wav_16k)
    window = torch.hann_window(WHISPER_N_FFT, dtype=torch.float64)
    spectrum = torch.stft(wav, WHISPER_N_FFT, WHISPER_HOP, window=window, center=True,
                          pad_mode="reflect", return_complex=True)             # (201, N // 160 + 1)
    power = spectrum[:, :-1].abs() ** 2
    filters = torch.tensor(slaney_mel_filters(16000, WHISPER_N_FFT, n_mels))  # (n_mels, 201)
    log_mel = (filters @ power).clamp(min=1e-10).log10()                       # (n_mels, T)
    log_mel = torch.maximum(log_mel, log_mel.max() - 8.0)
    return ((log_mel + 4.0) / 4.0).to(torch.float32)


# ---------------------------------------------------------------------------- flow prompt mel


def prompt_mel(wav_24k, cfg: MelConfig) -> torch.Tensor:
    """The flow's prompt mel (Matcha-TTS mel_spectrogram with the model's MelConfig).

    wav_24k: (N,) float samples at cfg.sampling_rate, N > (n_fft - hop) / 2.
    Returns float32 (T, num_mels), T = N // hop when center is False: reflect pad
    (n_fft - hop) / 2 both sides, STFT with a periodic Hann(win_size), magnitude
    sqrt(re^2 + im^2 + 1e-9), Slaney mel filters (fmin .. fmax or sr / 2), ln(clamp 1e-5).
    """
    wav = _as_float64(wav_24k)
    pad = int((cfg.n_fft - cfg.hop_size) / 2)
    if wav.shape[0] <= pad:
        raise ValueError(f"audio too short for the prompt mel: {wav.shape[0]} <= {pad} samples")
    padded = torch.nn.functional.pad(wav[None, None], (pad, pad), mode="reflect")[0, 0]
    window = torch.hann_window(cfg.win_size, dtype=torch.float64)
    spectrum = torch.stft(padded, cfg.n_fft, hop_length=cfg.hop_size, win_length=cfg.win_size,
                          window=window, center=cfg.center, pad_mode="reflect",
                          return_complex=True)                                  # (n_fft // 2 + 1, T)
    magnitude = torch.sqrt(spectrum.real ** 2 + spectrum.imag ** 2 + 1e-9)
    filters = torch.tensor(slaney_mel_filters(cfg.sampling_rate, cfg.n_fft, cfg.num_mels,
                                                  cfg.fmin, cfg.fmax))          # (num_mels, F)
    mel = (filters @ magnitude).clamp(min=1e-5).log()                          # (num_mels, T)
    return mel.T.contiguous().to(torch.float32)
