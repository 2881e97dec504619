"""Synthesis modes and request limits: the one owner of both (torch-free).

Every layer (the page, the API, the supervisor, the worker, the pipeline) asks this module
instead of repeating a rule: `MODES` are the values a request may name, `effective_mode` says
which mode a request really runs in, and `Limits` holds the bounds that the app's flags set and
`WorkerConfig` carries to the worker, with the checks of those bounds (`check_text`,
`check_prompt_seconds`, `check_upload_bytes`), which raise the package's error types.
`MIN_SEED`..`MAX_SEED` is the range of a request's seed, the one the sampler uses (`check_seed`):
no two accepted seeds give the same randomness, and a seed outside it is refused, never folded;
`check_speed` bounds the speed. `cosyvoice3.spec.check_spec` checks a whole request with these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import (
    BadInputError,
    BadSeedError,
    BadSpeedError,
    EmptyTextError,
    PromptTooLongError,
    PromptTooShortError,
    TextTooLongError,
    TooLongError,
)

ZERO_SHOT = "zero_shot"  # prompt audio + its transcript
CROSS_LINGUAL = "cross_lingual"  # prompt audio only (clones the voice, not the wording)
INSTRUCT = "instruct"  # prompt audio + an instruction (dialect, emotion, speed, free text)
MODES = (ZERO_SHOT, CROSS_LINGUAL, INSTRUCT)

MIN_SPEED, MAX_SPEED = 0.5, 2.0
MAX_PROMPT_SECONDS = 30.0  # the speech tokenizer's own limit (the reference asserts it)
# The sampler's randomness takes 32 bits of the seed (segment_seed, decoding/sampling.py), so these
# are the seeds with audio of their own; every layer accepts exactly these.
MIN_SEED, MAX_SEED = 0, 2**32 - 1


def effective_mode(mode: str, prompt_text: str) -> str:
    """Zero-shot without a transcript runs as cross-lingual (it clones the voice only)."""
    if mode == ZERO_SHOT and not (prompt_text or "").strip():
        return CROSS_LINGUAL
    return mode


def check_seed(seed) -> int:
    """The seed as an int; BadSeedError when it is not a whole number in MIN_SEED..MAX_SEED."""
    try:
        value = int(seed)
    except (TypeError, ValueError, OverflowError):
        raise BadSeedError(f"the seed {seed!r} is not a whole number", seed=seed, low=MIN_SEED,
                           high=MAX_SEED) from None
    if value != seed or not MIN_SEED <= value <= MAX_SEED:
        raise BadSeedError(f"the seed {seed} is outside {MIN_SEED} .. {MAX_SEED}", seed=seed, low=MIN_SEED,
                           high=MAX_SEED)
    return value


def check_speed(speed) -> float:
    """The speed as a float; BadSpeedError when it is not a number in MIN_SPEED..MAX_SPEED."""
    try:
        value = float(speed)
    except (TypeError, ValueError):
        raise BadSpeedError(f"the speed {speed!r} is not a number") from None
    if not MIN_SPEED <= value <= MAX_SPEED:
        raise BadSpeedError(f"speed {value:g} is outside {MIN_SPEED} .. {MAX_SPEED}", speed=value, low=MIN_SPEED,
                            high=MAX_SPEED)
    return value


@dataclass(frozen=True)
class Limits:
    """Bounds of one request. max_text_chars: characters of the text to speak (ends stripped);
    max_prompt_seconds / min_prompt_seconds: length of the prompt audio (the worker measures it
    after trimming silence, the app before); max_upload_bytes: size of an uploaded prompt file.
    A value at a limit is accepted; one past it is refused."""

    max_text_chars: int = 5000
    max_prompt_seconds: float = MAX_PROMPT_SECONDS
    min_prompt_seconds: float = 1.0
    max_upload_bytes: int = 20 * 1024 * 1024

    def __post_init__(self):
        if self.max_text_chars < 1:
            raise ValueError(f"max_text_chars must be at least 1, not {self.max_text_chars}")
        if not 0 < self.min_prompt_seconds <= self.max_prompt_seconds <= MAX_PROMPT_SECONDS:
            raise ValueError(f"prompt seconds must satisfy 0 < min ({self.min_prompt_seconds:g}) <= max "
                             f"({self.max_prompt_seconds:g}) <= {MAX_PROMPT_SECONDS:g} (the speech "
                             "tokenizer's limit)")
        if self.max_upload_bytes < 1:
            raise ValueError(f"max_upload_bytes must be at least 1, not {self.max_upload_bytes}")

    def check_text(self, text: str) -> str:
        """The text to speak with its ends stripped; EmptyTextError or TextTooLongError."""
        text = (text or "").strip()
        if not text:
            raise EmptyTextError("the text to speak is empty")
        if len(text) > self.max_text_chars:
            raise TextTooLongError(f"the text has {len(text)} characters; the limit is {self.max_text_chars}",
                                   n=len(text), limit=self.max_text_chars)
        return text

    def check_prompt_seconds(self, seconds: float) -> None:
        """PromptTooShortError or PromptTooLongError for a prompt of that length."""
        if seconds < self.min_prompt_seconds:
            raise PromptTooShortError(f"the prompt audio is {seconds:.1f} s; at least {self.min_prompt_seconds:g} s "
                                      "of speech is needed (3 to 10 s works best)", seconds=seconds,
                                      min_seconds=self.min_prompt_seconds)
        if seconds > self.max_prompt_seconds:
            raise PromptTooLongError(f"the prompt audio is {seconds:.1f} s; the limit is "
                                     f"{self.max_prompt_seconds:g} s", seconds=seconds, max_seconds=self.max_prompt_seconds)

    def check_upload_bytes(self, size: int) -> None:
        """TooLongError for an upload over max_upload_bytes, BadInputError for an empty one."""
        if size <= 0:
            raise BadInputError("the uploaded file is empty")
        if size > self.max_upload_bytes:
            raise TooLongError(f"the file has {size} bytes; the limit is {self.max_upload_bytes} "
                               f"({self.max_upload_bytes / (1 << 20):g} MB)")

    def as_dict(self) -> dict:
        return asdict(self)
