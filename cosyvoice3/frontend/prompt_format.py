"""What the LLM reads in each synthesis mode (reference section 2.3).

CosyVoice3 needs `<|endofprompt|>` in its text input; where it goes depends on the mode:
- zero_shot: prompt text = "You are a helpful assistant.<|endofprompt|>" + transcript of the
  prompt audio (a transcript that already contains <|endofprompt|> is kept as given); the
  prompt's speech tokens follow the task id.
- cross_lingual: no prompt text; the system prompt is put in front of the tts text, so the
  length limits (computed from tts text tokens) include it, as in the reference; no prompt
  speech tokens.
- instruct: prompt text = the resolved instruction; no prompt speech tokens.
The tts text given here is one normalised segment (normalisation and splitting happen before,
on the user's text, so the system prompt never blocks them).
"""

from __future__ import annotations

from dataclasses import dataclass

from cosyvoice3.errors import BadInputError, EmptyTextError
from cosyvoice3.modes import CROSS_LINGUAL, MODES, ZERO_SHOT

from .instructions import ENDOFPROMPT, resolve_instruction

SYSTEM_PROMPT = "You are a helpful assistant." + ENDOFPROMPT


@dataclass(frozen=True)
class LLMText:
    prompt_text: str  # text before the tts text ('' when none)
    tts_text: str  # the text to speak (counts for the length limits)
    use_prompt_speech_tokens: bool  # feed the prompt's speech tokens after the task id


def format_llm_text(mode: str, tts_text: str, prompt_text: str = "", instruction: str = "") -> LLMText:
    """mode: "zero_shot" | "cross_lingual" | "instruct"; tts_text: one text segment;
    prompt_text: transcript of the prompt audio (zero_shot); instruction: preset id, label,
    or free text (instruct). Raises BadInputError for a wrong mode or missing inputs."""
    if mode not in MODES:
        raise BadInputError(f"unknown mode {mode!r}, expected one of {MODES}")
    if not tts_text.strip():
        raise EmptyTextError("the text to synthesise is empty")
    if mode == ZERO_SHOT:
        transcript = prompt_text.strip()
        if not transcript:
            raise BadInputError("zero-shot mode needs the transcript of the prompt audio")
        if ENDOFPROMPT not in transcript:
            transcript = SYSTEM_PROMPT + transcript
        return LLMText(transcript, tts_text, use_prompt_speech_tokens=True)
    if mode == CROSS_LINGUAL:
        text = tts_text if ENDOFPROMPT in tts_text else SYSTEM_PROMPT + tts_text
        return LLMText("", text, use_prompt_speech_tokens=False)
    return LLMText(resolve_instruction(instruction), tts_text, use_prompt_speech_tokens=False)  # instruct
