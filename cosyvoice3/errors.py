"""Exception types of the cosyvoice3 package.

Every error a caller can cause carries a `code` from the worker protocol's closed set
(`bad_input`, `too_long`, `internal`), so the worker can turn it into a `Failed` message
without guessing. Errors of the model files are `ModelLoadError`s; they stop a worker boot.
"""

from __future__ import annotations


class CosyVoiceError(Exception):
    """Base class of everything this package raises on purpose."""

    code = "internal"


class ModelLoadError(CosyVoiceError):
    """The model directory is missing, incomplete or does not match the architecture."""


class CheckpointMismatchError(ModelLoadError):
    """A checkpoint file has missing, unexpected or wrongly shaped tensors."""

    def __init__(self, file: str, missing=(), unexpected=(), shape_errors=()):
        self.file = file
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.shape_errors = list(shape_errors)
        parts = [f"checkpoint {file} does not match the model"]
        if self.missing:
            parts.append(f"missing keys ({len(self.missing)}): {_preview(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys ({len(self.unexpected)}): {_preview(self.unexpected)}")
        if self.shape_errors:
            parts.append(f"shape mismatches ({len(self.shape_errors)}): {_preview(self.shape_errors)}")
        super().__init__("; ".join(parts))


class BadInputError(CosyVoiceError, ValueError):
    """The request itself is wrong (text, prompt audio, parameters)."""

    code = "bad_input"


class TooLongError(BadInputError):
    """Input longer than the configured limit (text or prompt audio)."""

    code = "too_long"


class EmptyTextError(BadInputError):
    pass


class TextTooLongError(TooLongError):
    pass


class AudioDecodeError(BadInputError):
    """Audio bytes that no decoder could read."""


class UnsupportedSampleRateError(BadInputError):
    pass


class PromptTooShortError(BadInputError):
    pass


class PromptTooLongError(TooLongError):
    pass


class SilentPromptError(BadInputError):
    pass


def _preview(items, limit: int = 8) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")
