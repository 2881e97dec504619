"""Instruction presets of CosyVoice3 and turning a user's instruction into the LLM prompt text.

The presets (`data/instructions.json`) are the official `instruct_list` (26 strings: 17
dialects, loud/soft, slow/fast, happy/sad/angry, 2 role styles) with our ids and zh/en labels.
Every instruction given to the LLM has the form
`You are a helpful assistant. <instruction><|endofprompt|>`. No torch import: the UI uses this.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cosyvoice3.errors import BadInputError

DATA_PATH = Path(__file__).parent / "data" / "instructions.json"
SYSTEM_PREFIX = "You are a helpful assistant."
ENDOFPROMPT = "<|endofprompt|>"


@dataclass(frozen=True)
class InstructionPreset:
    id: str
    category: str  # dialect | volume | speed | emotion | role
    label_zh: str
    label_en: str
    instruction: str  # the full LLM prompt text

    @property
    def label(self) -> str:
        """Both labels, as a menu shows them: '广东话 · Cantonese'."""
        return f"{self.label_zh} · {self.label_en}"

    @property
    def bare(self) -> str:
        """The instruction without system prefix and end marker, e.g. '请用广东话表达。'."""
        return _strip_wrapper(self.instruction)


@lru_cache(maxsize=None)
def presets() -> tuple[InstructionPreset, ...]:
    data = json.loads(DATA_PATH.read_text(encoding="utf-8"))
    return tuple(InstructionPreset(**p) for p in data["presets"])


def preset(preset_id: str) -> InstructionPreset:
    for p in presets():
        if p.id == preset_id:
            return p
    raise BadInputError(f"unknown instruction preset {preset_id!r}")


def wrap_instruction(bare: str) -> str:
    """'请用广东话表达。' -> 'You are a helpful assistant. 请用广东话表达。<|endofprompt|>'."""
    return f"{SYSTEM_PREFIX} {bare}{ENDOFPROMPT}"


def resolve_instruction(value: str) -> str:
    """Turn a user's instruction into the full LLM prompt text.

    Accepts a preset id ("cantonese"), its zh or en label or both ("广东话", "Cantonese",
    "广东话 · Cantonese"; case and whitespace ignored), the exact instruction string, a bare instruction ("请用广东话表达。")
    or any free text; free text is wrapped like the presets. Whitespace runs become one space.
    Raises BadInputError for an empty instruction or one with text after <|endofprompt|>.
    """
    text = _normalise_space(value or "")
    if not text:
        raise BadInputError("the instruction is empty")
    key = text.casefold()
    for p in presets():
        if key in (p.id.casefold(), p.label_zh.casefold(), p.label_en.casefold(), p.label.casefold()):
            return p.instruction
    if ENDOFPROMPT in text and not text.endswith(ENDOFPROMPT):
        raise BadInputError(f"{ENDOFPROMPT} must end the instruction")
    bare = _strip_wrapper(text)
    if not bare:
        raise BadInputError("the instruction is empty")
    return wrap_instruction(bare)


def _strip_wrapper(text: str) -> str:
    """Remove a leading system prefix and the trailing end marker, if present."""
    if text.endswith(ENDOFPROMPT):
        text = text[: -len(ENDOFPROMPT)]
    if text.startswith(SYSTEM_PREFIX):
        text = text[len(SYSTEM_PREFIX):]
    return text.strip()


def _normalise_space(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
