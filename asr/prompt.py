"""Transcribing a voice prompt: the same checks as preparing it for synthesis, then recognition.

An empty, silent, too short or too long prompt fails here with the error (and the sentence) that
synthesis would give for it (`cosyvoice3.features.prepare.validate_prompt_audio`), never with an
empty transcript. The clip is trimmed of silence as synthesis trims it, resampled to 16 kHz with
the reference resampler (the one the official recogniser's loader uses) and recognised.
"""

from __future__ import annotations

import numpy as np

from cosyvoice3.features.prepare import validate_prompt_audio
from cosyvoice3.frontend.audio import resample
from cosyvoice3.modes import Limits

from .recognizer import Recognizer, Transcription


def transcribe_prompt(recognizer: Recognizer, audio: np.ndarray, sample_rate: int, limits: Limits | None = None,
                      language: str = "auto") -> Transcription:
    """Prompt audio (float or integer PCM, (N,) or (N, C)) -> its transcript and language."""
    limits = limits or Limits()
    wav = validate_prompt_audio(audio, sample_rate, trim=True, max_seconds=limits.max_prompt_seconds,
                                min_seconds=limits.min_prompt_seconds)
    wav_16k = resample(wav, int(sample_rate), recognizer.config.sample_rate, method="reference")
    return recognizer.recognize(wav_16k, language=language)
