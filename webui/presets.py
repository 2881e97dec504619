"""The instruction presets as the page's menu names them ('广东话 · Cantonese' -> 'cantonese').
The presets and the resolution of whatever a caller gives (a preset id or label, an instruction,
free text) are the model package's (`cosyvoice3.frontend.instructions`, used by
`cosyvoice3.spec.check_spec`)."""

from __future__ import annotations

from cosyvoice3.frontend.instructions import presets


def preset_choices() -> list[tuple[str, str]]:
    """Dropdown choices: ('广东话 · Cantonese', 'cantonese'), in the official order."""
    return [(p.label, p.id) for p in presets()]
