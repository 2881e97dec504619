"""What one request asks for: `SpeechSpec` (torch-free, frozen) and `check_spec`, its one validator.

A spec is built where a request enters (the page, the Gradio API, the OpenAI API) from that
entry's own input shape, checked there once by `check_spec` against the app's `Limits`, and then
carried unchanged: inside the worker protocol's `Synthesize` envelope over the pipe, and inside
`SynthesisRequest` into the model (as vLLM carries SamplingParams inside its engine request). The
voice (prompt audio or prepared features) travels beside it; the voice's transcript is
`prompt_text`, here and nowhere else. The supervisor's admission and the model run the same
validator on what arrives (a checked spec comes out of it unchanged), so a caller that bypasses
the web process meets the same rules.

Adding a request field: declare it here (with its check in `check_spec` when it needs one), read it
where it is used, offer it on the page and the APIs; nothing in between copies fields.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .errors import BadInputError, BadInstructionError, UnknownModeError
from .frontend.instructions import resolve_instruction
from .modes import INSTRUCT, MODES, ZERO_SHOT, Limits, check_seed, check_speed, effective_mode


@dataclass(frozen=True)
class SpeechSpec:
    """One request as the caller asks for it (`check_spec` gives it checked and resolved)."""

    text: str  # what to say (checked: ends stripped, within Limits.max_text_chars)
    mode: str = ZERO_SHOT  # one of MODES (checked: the effective mode, see modes.effective_mode)
    prompt_text: str = ""  # the transcript of the voice prompt ('' when unknown: cross-lingual cloning)
    instruction: str = ""  # instruct mode: a preset id or label, or free text (checked: the full instruction)
    seed: int = 0  # MIN_SEED..MAX_SEED: text segment i samples from a stream keyed by (seed, i)
    speed: float = 1.0  # MIN_SPEED..MAX_SPEED
    stream: bool = True  # audio chunk by chunk as it is made, else one chunk per text segment
    # normalise the text (numbers, dates, units read out) and cut it into sentences; False: spoken as
    # written, for text already normalised or with pinyin/phoneme markup (the official text_frontend)
    text_frontend: bool = True


def check_spec(spec: SpeechSpec, limits: Limits) -> SpeechSpec:
    """`spec` checked and resolved, or the package's typed error (a `BadInputError` whose reason
    names the rule): text stripped and within the limit, a known mode (then the effective one),
    a number for the speed within its bounds, a seed in range (unset: 0), the prompt transcript
    stripped, the instruction resolved to the full LLM text in instruct mode ('' otherwise)."""
    text = limits.check_text(spec.text)
    if spec.mode not in MODES:
        raise UnknownModeError(f"unknown mode {spec.mode!r}; expected one of {', '.join(MODES)}", mode=spec.mode,
                               modes=", ".join(MODES))
    speed = check_speed(1.0 if spec.speed is None else spec.speed)
    seed = check_seed(spec.seed or 0)
    prompt_text = (spec.prompt_text or "").strip()
    mode = effective_mode(spec.mode, prompt_text)
    instruction = _instruction(spec.instruction) if mode == INSTRUCT else ""
    return replace(spec, text=text, mode=mode, prompt_text=prompt_text, instruction=instruction, seed=seed,
                   speed=speed, stream=bool(spec.stream), text_frontend=bool(spec.text_frontend))


def _instruction(value: str) -> str:
    if not (value or "").strip():
        raise BadInstructionError("instruct mode needs an instruction", detail="")
    try:
        return resolve_instruction(value)
    except BadInputError as e:
        raise BadInstructionError(str(e), detail=str(e)) from None
