"""Synthesis modes and request limits: the one owner of both (torch-free).

Every layer (the page, the API, the supervisor, the worker, the pipeline) asks this module
instead of repeating a rule: `MODES` are the values a request may name, `effective_mode` says
which mode a request really runs in, and `Limits` holds the bounds that the app's flags set and
`WorkerConfig` carries to the worker.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

ZERO_SHOT = "zero_shot"  # prompt audio + its transcript
CROSS_LINGUAL = "cross_lingual"  # prompt audio only (clones the voice, not the wording)
INSTRUCT = "instruct"  # prompt audio + an instruction (dialect, emotion, speed, free text)
MODES = (ZERO_SHOT, CROSS_LINGUAL, INSTRUCT)

MIN_SPEED, MAX_SPEED = 0.5, 2.0


def effective_mode(mode: str, prompt_text: str) -> str:
    """Zero-shot without a transcript runs as cross-lingual (it clones the voice only)."""
    if mode == ZERO_SHOT and not (prompt_text or "").strip():
        return CROSS_LINGUAL
    return mode


@dataclass(frozen=True)
class Limits:
    """Bounds of one request. max_text_chars: characters of the text to speak;
    max_prompt_seconds / min_prompt_seconds: length of the prompt audio (after trimming
    silence); max_upload_bytes: size of an uploaded prompt file."""

    max_text_chars: int = 5000
    max_prompt_seconds: float = 30.0
    min_prompt_seconds: float = 1.0
    max_upload_bytes: int = 20 * 1024 * 1024

    def as_dict(self) -> dict:
        return asdict(self)
