"""The instruction presets as the page and the APIs name them: the dropdown's choices
('广东话 · Cantonese' -> 'cantonese') and the resolution of whatever a caller gives (a preset id,
a dropdown label, a preset's zh/en label or instruction, or free text) to the full instruction.
The presets themselves are the model package's (`cosyvoice3.frontend.instructions`)."""

from __future__ import annotations

from cosyvoice3.frontend.instructions import presets, resolve_instruction


def preset_choices() -> list[tuple[str, str]]:
    """Dropdown choices: ('广东话 · Cantonese', 'cantonese'), in the official order."""
    return [(f"{p.label_zh} · {p.label_en}", p.id) for p in presets()]


def instruction_text(value: str) -> str:
    """A preset id, a dropdown label, a preset's zh/en label or instruction, or free text -> the
    full instruction string ('' when empty). Raises cosyvoice3.errors.BadInputError for an
    instruction the model cannot take."""
    value = (value or "").strip()
    if not value:
        return ""
    for label, preset_id in preset_choices():
        if value == label:
            value = preset_id
    return resolve_instruction(value)
