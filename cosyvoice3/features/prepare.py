"""Prompt audio -> `PreparedPrompt`: validation, trimming, features, speaker embedding, speech
tokens and the token/mel alignment.

The steps, each usable on its own (the golden checker runs them on the reference's inputs):
- `validate_prompt_audio`: the checks a user can fail (empty, NaN, sample rate, silence, length),
  silence trimming and optional truncation; returns the clip to use.
- `compute_features`: the reference resampler to 16 kHz and 24 kHz, then the CAM++ fbank, the
  Whisper log-mel and the flow's prompt mel (no validation, no trimming).
- `prompt_from_features`: the two ONNX models and `align_prompt`.
- `align_prompt`: L = min(mel frames // 2, tokens); keep 2L mel frames and L tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cosyvoice3.config import MelConfig
from cosyvoice3.errors import (
    BadInputError,
    PromptTooLongError,
    PromptTooShortError,
    SilentPromptError,
    UnsupportedSampleRateError,
)
from cosyvoice3.frontend.audio import as_mono_float32, duration, peak_amplitude, resample, rms_amplitude, trim_silence
from cosyvoice3.frontend.prompt import PreparedPrompt
from cosyvoice3.modes import MAX_PROMPT_SECONDS

from . import mel as features
from .onnx_models import SpeakerEncoder, SpeechTokenizer

TOKENIZER_SAMPLE_RATE = 16000
MAX_TOKENIZER_SECONDS = MAX_PROMPT_SECONDS  # the speech tokenizer's limit (owned by modes.py)
MIN_SAMPLE_RATE = 16000           # the reference refuses prompts below 16 kHz
MAX_SAMPLE_RATE = 384000
SILENCE_PEAK = 1e-3               # -60 dBFS
SILENCE_RMS = 1e-4                # -80 dBFS
TOKEN_MEL_RATIO = 2               # 25 Hz tokens, 50 Hz mel frames


@dataclass
class FrontendFeatures:
    """Features of one clip, named after the golden `frontend.npz` arrays.

    wav_16k: float32 (N16,); wav_24k: float32 (N24,) (at the mel's sampling rate)
    campplus_fbank: float32 (T_fb, 80), mean-normalised Kaldi fbank, T_fb = 1 + (N16 - 400) // 160
    whisper_logmel: float32 (128, T_w), T_w = N16 // 160
    prompt_feat: float32 (T_mel, 80), T_mel = N24 // 480
    """

    wav_16k: np.ndarray
    wav_24k: np.ndarray
    campplus_fbank: np.ndarray
    whisper_logmel: np.ndarray
    prompt_feat: np.ndarray


def validate_prompt_audio(audio: np.ndarray, sample_rate: int, *, trim: bool = True,
                          truncate: bool = False, max_seconds: float = MAX_TOKENIZER_SECONDS,
                          min_seconds: float = 1.0) -> np.ndarray:
    """Check prompt audio and return the float32 mono clip (N,) to use, at `sample_rate`.

    audio: float or integer PCM, (N,) or (N, C). With `trim`, leading/trailing silence is cut
    before the length checks; with `truncate`, a clip over `max_seconds` keeps its first
    `max_seconds` instead of raising PromptTooLongError.
    """
    wav = as_mono_float32(audio)
    if len(wav) == 0:
        raise PromptTooShortError("The prompt audio is empty.", seconds=0.0, min_seconds=min_seconds)
    if not np.all(np.isfinite(wav)):
        raise BadInputError("The prompt audio contains invalid samples (NaN or infinity).")
    if int(sample_rate) != sample_rate or not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise UnsupportedSampleRateError(
            f"The prompt audio's sample rate is {sample_rate} Hz; it must be between "
            f"{MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz. Record or export it at 16 kHz or more.",
            sample_rate=sample_rate, low=MIN_SAMPLE_RATE, high=MAX_SAMPLE_RATE)
    sample_rate = int(sample_rate)
    if peak_amplitude(wav) < SILENCE_PEAK or rms_amplitude(wav) < SILENCE_RMS:
        raise SilentPromptError("The prompt audio is silent (or nearly so); record the voice to clone.")
    if trim:
        wav = trim_silence(wav, sample_rate)
    seconds = duration(wav, sample_rate)
    if seconds < min_seconds:
        after = " after removing silence" if trim else ""
        raise PromptTooShortError(f"The prompt audio is {seconds:.1f} s long{after}; at least "
                                  f"{min_seconds:g} s of speech is needed (3 to 10 s works best).",
                                  seconds=seconds, min_seconds=min_seconds)
    if seconds > max_seconds:
        if not truncate:
            raise PromptTooLongError(f"The prompt audio is {seconds:.1f} s long; the limit is "
                                     f"{max_seconds:g} s. Use a shorter clip (3 to 10 s works best).",
                                     seconds=seconds, max_seconds=max_seconds)
        wav = wav[:int(max_seconds * sample_rate)]
    return np.ascontiguousarray(wav)


def compute_features(wav: np.ndarray, sample_rate: int, mel_cfg: MelConfig) -> FrontendFeatures:
    """All front-end features of mono `wav` (N,) at `sample_rate`, with the reference resampler."""
    wav = np.asarray(wav, dtype=np.float32)
    wav_16k = resample(wav, sample_rate, TOKENIZER_SAMPLE_RATE, method="reference")
    wav_24k = resample(wav, sample_rate, mel_cfg.sampling_rate, method="reference")
    return FrontendFeatures(
        wav_16k=wav_16k,
        wav_24k=wav_24k,
        campplus_fbank=features.campplus_input(wav_16k)[0].numpy(),
        whisper_logmel=features.whisper_log_mel(wav_16k).numpy(),
        prompt_feat=features.prompt_mel(wav_24k, mel_cfg).numpy())


def align_prompt(speech_tokens: np.ndarray, mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """speech_tokens (P,), mel (T_mel, 80) -> (tokens[:L], mel[:2L]), L = min(T_mel // 2, P)."""
    n_tokens = min(mel.shape[0] // TOKEN_MEL_RATIO, len(speech_tokens))
    return speech_tokens[:n_tokens], mel[:TOKEN_MEL_RATIO * n_tokens]


def prompt_from_features(feats: FrontendFeatures, text: str, speaker_encoder: SpeakerEncoder,
                         speech_tokenizer: SpeechTokenizer) -> PreparedPrompt:
    """Run CAM++ and the speech tokenizer on `feats` and align tokens with the prompt mel."""
    embedding = speaker_encoder.embed(feats.campplus_fbank)                  # (192,)
    tokens = speech_tokenizer.tokenize(feats.whisper_logmel)                 # (P,)
    tokens, mel = align_prompt(tokens, feats.prompt_feat)
    if len(tokens) == 0:
        raise PromptTooShortError("The prompt audio is too short to give any speech tokens.",
                                  seconds=duration(feats.wav_16k, TOKENIZER_SAMPLE_RATE))
    return PreparedPrompt(speech_tokens=tokens, embedding=embedding, mel=mel, text=text,
                          duration_s=round(duration(feats.wav_16k, TOKENIZER_SAMPLE_RATE), 3))


def prepare_prompt(audio: np.ndarray, sample_rate: int, text: str, speaker_encoder: SpeakerEncoder,
                   speech_tokenizer: SpeechTokenizer, mel_cfg: MelConfig, *, trim: bool = True,
                   truncate: bool = False, max_seconds: float = MAX_TOKENIZER_SECONDS,
                   min_seconds: float = 1.0) -> PreparedPrompt:
    """Prompt audio (float or integer PCM, (N,) or (N, C)) + its transcript -> PreparedPrompt.

    Raises PromptTooShortError, PromptTooLongError, SilentPromptError,
    UnsupportedSampleRateError or BadInputError (each with a `.code`) for unusable audio.
    `max_seconds` may not exceed the speech tokenizer's 30 s.
    """
    if max_seconds > MAX_TOKENIZER_SECONDS:
        raise ValueError(f"max_seconds {max_seconds} exceeds the speech tokenizer's limit of "
                         f"{MAX_TOKENIZER_SECONDS:g} s")
    wav = validate_prompt_audio(audio, sample_rate, trim=trim, truncate=truncate,
                                max_seconds=max_seconds, min_seconds=min_seconds)
    feats = compute_features(wav, int(sample_rate), mel_cfg)
    return prompt_from_features(feats, text, speaker_encoder, speech_tokenizer)
