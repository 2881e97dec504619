"""Exception types of the cosyvoice3 package.

Every error a caller can cause carries a `code` from the worker protocol's closed set
(`bad_input`, `too_long`, `internal`), so the worker can turn it into a `Failed` message
without guessing, and a `reason`: which rule refused it, a stable name, with its `params` (the
numbers of the refusal: seconds, limits), which travel in `Failed` so the web side words each
reason in its own sentence (webui/messages.py) instead of reading the English message. Errors of
the model files are `ModelLoadError`s; they stop a worker boot.
"""

from __future__ import annotations


class CosyVoiceError(Exception):
    """Base class of everything this package raises on purpose. params: the numbers of `reason`."""

    code = "internal"
    reason = "internal"

    def __init__(self, message: str = "", **params):
        super().__init__(message)
        self.params = params


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
    reason = "bad_input"


class TooLongError(BadInputError):
    """Input longer than the configured limit (text or prompt audio)."""

    code = "too_long"
    reason = "too_long"


class EmptyTextError(BadInputError):
    reason = "text_empty"


class TextTooLongError(TooLongError):
    reason = "text_too_long"


class UnknownModeError(BadInputError):
    reason = "mode_unknown"


class BadSpeedError(BadInputError):
    """params: speed, low, high (no speed: it is not a number)."""

    reason = "speed_range"


class BadSeedError(BadInputError):
    reason = "seed_range"


class BadInstructionError(BadInputError):
    """Instruct mode without an instruction the model can take; params: detail ('' when none was given)."""

    reason = "instruction_missing"


class AudioDecodeError(BadInputError):
    """Audio bytes that no decoder could read."""

    reason = "prompt_unreadable"


class UnsupportedSampleRateError(BadInputError):
    reason = "sample_rate"


class PromptTooShortError(BadInputError):
    reason = "prompt_too_short"


class PromptTooLongError(TooLongError):
    reason = "prompt_too_long"


class SilentPromptError(BadInputError):
    reason = "prompt_silent"


def _preview(items, limit: int = 8) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


# Failures of the device rather than of a request. Matched by type name and message, so the
# check needs no torch import (the app process calls it too).
CUDA_ERROR_MARKERS = ("CUDA error", "cudaError", "illegal memory access", "CUBLAS_STATUS", "cuDNN error",
                      "CUDNN_STATUS", "device-side assert", "unspecified launch failure")


def is_out_of_memory(exc: BaseException) -> bool:
    """A failed device allocation (CUDA out-of-memory): the work may fit when retried smaller."""
    return type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(exc)


def is_cuda_failure(exc: BaseException) -> bool:
    """An error of the CUDA context (out-of-memory included); any other than out-of-memory leaves
    a context that is not trusted."""
    text = f"{type(exc).__name__}: {exc}"
    return is_out_of_memory(exc) or type(exc).__name__ == "AcceleratorError" or any(m in text for m in CUDA_ERROR_MARKERS)
