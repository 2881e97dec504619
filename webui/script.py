"""Dialogue scripts: a text whose inline tags switch the voice, pause, or give a line an instruction
(torch-free). This module owns the script syntax, its refusals, the lookup of the voices it names
and the plan of syntheses it makes; it neither synthesises nor words its errors (webui/messages.py
words them from each error's `reason` and `params`).

The syntax (tag names are case-blind; `:` or the full-width `：` separates name and value; a value
holds no bracket and no line break):
- `[voice:NAME]`: a saved voice, by its name or its id. Everything after the tag - the rest of its
  line and the lines below - is spoken in that voice, up to the next voice tag. Several voice tags
  on one line each start a new part of that line. Text before the first voice tag is spoken in the
  request's own voice (the one chosen on the page, the API's `voice` field): `Speech.voice` None.
- `[pause:0.8s]`: silence of that length: seconds (`0.8s`, `1.5`) or milliseconds (`800ms`),
  more than 0 and at most MAX_PAUSE_S, and a script's pauses together at most MAX_TOTAL_PAUSE_S (so
  no text within the length limit asks for hours of silence). It cuts its line in two; voice and
  instruction go on.
- `[instruction:...]`: an instruction preset (id, label, see webui/presets.py) or free text, for the
  next text: the rest of its own line when text follows the tag there; else (a tag alone on its
  line, or only other tags after it) the next line that has text, whatever empty lines, pauses or
  voice tags come between. It ends with the line it was used on. A later instruction tag replaces
  an earlier one; an instruction that never reaches any text is refused.
- Anything else in brackets without a colon (CosyVoice3's `[laughter]`, `[breath]`, `[AY1]`, ...)
  is text and stays as written. A bracketed `[name:...]` with any other name, or one that is not
  closed on its line, is refused with its line number, so a misspelt tag is never spoken.
- Line numbers count from 1, as an editor shows them (`\\r\\n`, `\\r` and `\\n` each end a line).
  Empty lines, and text with nothing to speak (blanks, punctuation only), make no speech.

A text is a script (`is_script`) when it holds at least one voice, pause or instruction tag; any
other text keeps its meaning of one plain text. `parse` gives the ordered items: `Speech` (voice
name or None, full instruction or None, text, line) and `Pause` (seconds, line); `resolve_voices`
replaces each voice name by the caller's voice object, refusing all unknown names at once before
any work; `plan` turns a resolved script into the syntheses to run, in `cosyvoice3.modes`' modes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Callable, Generic, Iterable, TypeVar

from cosyvoice3.errors import BadInputError
from cosyvoice3.frontend.instructions import resolve_instruction
from cosyvoice3.frontend.text import is_only_punctuation
from cosyvoice3.modes import INSTRUCT, ZERO_SHOT, effective_mode

V = TypeVar("V")

VOICE, PAUSE, INSTRUCTION = "voice", "pause", "instruction"
TAGS = (VOICE, PAUSE, INSTRUCTION)
MAX_PAUSE_S = 10.0
MAX_TOTAL_PAUSE_S = 300.0
SHOWN_TAG_CHARS = 40  # a refused tag is quoted in the error up to this many characters

_TAG = re.compile(r"\[\s*([A-Za-z][\w-]*)\s*[:：]([^\[\]\r\n]*)\]")
_OPENER = re.compile(r"\[\s*[A-Za-z][\w-]*\s*[:：]")  # a colon tag's start; left in text: not closed
_PAUSE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?", re.IGNORECASE)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


# ---------------------------------------------------------------------------- errors


class ScriptError(BadInputError):
    """A script refused before any work. Its `reason` (one of REASONS) says which rule refused it;
    its `params` give the lines:
    - UNKNOWN_VOICE: voices = [{"name": as written, "lines": [line, ...]}, ...], in order of appearance;
    - NO_VOICE (text before any voice tag while the request has no voice of its own): lines;
    - BAD_PAUSE: line, value (as written), max_s;
    - TOO_MUCH_PAUSE (the pauses so far add up to more than MAX_TOTAL_PAUSE_S): line, max_s;
    - BAD_TAG: line, tag (as written, shortened), problem (one of TAG_PROBLEMS);
    - EMPTY_SCRIPT (tags only, nothing to speak): none."""

    def __init__(self, reason: str, message: str, **params):
        super().__init__(message, **params)
        self.reason = reason


UNKNOWN_VOICE, NO_VOICE, BAD_PAUSE, TOO_MUCH_PAUSE, BAD_TAG, EMPTY_SCRIPT = (
    "script_unknown_voice", "script_no_voice", "script_bad_pause", "script_too_much_pause", "script_bad_tag",
    "script_empty")
REASONS = (UNKNOWN_VOICE, NO_VOICE, BAD_PAUSE, TOO_MUCH_PAUSE, BAD_TAG, EMPTY_SCRIPT)

UNKNOWN, UNCLOSED, EMPTY, NO_TEXT, BAD_INSTRUCTION = "unknown", "unclosed", "empty", "no_text", "bad_instruction"
TAG_PROBLEMS = (UNKNOWN, UNCLOSED, EMPTY, NO_TEXT, BAD_INSTRUCTION)


def _bad_tag(line: int, tag: str, problem: str) -> ScriptError:
    shown = tag if len(tag) <= SHOWN_TAG_CHARS else tag[: SHOWN_TAG_CHARS - 1] + "…"
    return ScriptError(BAD_TAG, f"line {line}: {problem} tag {shown!r}", line=line, tag=shown, problem=problem)


# ---------------------------------------------------------------------------- items


@dataclass(frozen=True)
class Speech(Generic[V]):
    """Text to speak. voice: the name in the tag (parse), the caller's voice (resolve_voices), or
    None for the request's own voice; instruction: the full instruction (presets resolved) or None."""

    text: str
    line: int
    voice: V | None = None
    instruction: str | None = None


@dataclass(frozen=True)
class Pause:
    seconds: float
    line: int

    def samples(self, sample_rate: int) -> int:
        """The pause's length in samples at `sample_rate` (rounded to the nearest sample)."""
        return round(self.seconds * sample_rate)


@dataclass(frozen=True)
class Synthesis(Generic[V]):
    """One synthesis of a plan: `text` in `voice`, in `mode` (a `cosyvoice3.modes` mode);
    `instruction` is "" unless the mode is instruct; `line`: where the text is in the script."""

    voice: V
    mode: str
    text: str
    instruction: str
    line: int


# ---------------------------------------------------------------------------- parsing


def is_script(text: str) -> bool:
    """True when the text holds at least one voice, pause or instruction tag."""
    return any(m.group(1).casefold() in TAGS for m in _TAG.finditer(text or ""))


def parse(text: str) -> tuple[Speech[str] | Pause, ...]:
    """The script's items in order (see the module docstring for the rules). Raises ScriptError:
    BAD_TAG, BAD_PAUSE or TOO_MUCH_PAUSE (with the line), EMPTY_SCRIPT."""
    items: list[Speech[str] | Pause] = []
    voice: str | None = None
    instruction: str | None = None  # the instruction in force or waiting for text
    instruction_tag = (0, "")  # where it was given, for a refusal when it never reaches text
    used_on = 0  # the line its first text is on (0: still waiting)
    paused = 0.0  # seconds of pause so far

    def speak(piece: str, line: int) -> None:
        nonlocal used_on
        piece = piece.strip()
        if not piece or is_only_punctuation(piece):
            return
        if instruction is not None and not used_on:
            used_on = line
        items.append(Speech(piece, line, voice, instruction))

    for line, raw in enumerate(_LINE_BREAK.split(text or ""), start=1):
        if used_on and used_on < line:
            instruction, used_on = None, 0
        position = 0
        for match in _TAG.finditer(raw):
            speak(_checked_text(raw[position:match.start()], line), line)
            position = match.end()
            name, value, tag = match.group(1).casefold(), match.group(2).strip(), match.group(0)
            if name not in TAGS:
                raise _bad_tag(line, tag, UNKNOWN)
            if not value:
                raise _bad_tag(line, tag, EMPTY)
            if name == VOICE:
                voice = " ".join(value.split())
            elif name == PAUSE:
                items.append(Pause(_pause_seconds(value, line), line))
                paused += items[-1].seconds
                if paused > MAX_TOTAL_PAUSE_S + 1e-9:
                    raise ScriptError(TOO_MUCH_PAUSE, f"line {line}: the pauses add up to more than "
                                      f"{MAX_TOTAL_PAUSE_S:g} s", line=line, max_s=MAX_TOTAL_PAUSE_S)
            else:
                instruction, instruction_tag, used_on = _instruction(value, line, tag), (line, tag), 0
        speak(_checked_text(raw[position:], line), line)
    if instruction is not None and not used_on:
        raise _bad_tag(*instruction_tag, NO_TEXT)
    if not any(isinstance(item, Speech) for item in items):
        raise ScriptError(EMPTY_SCRIPT, "the script has no text to speak")
    return tuple(items)


def _checked_text(piece: str, line: int) -> str:
    """Text between tags; a colon tag's start left in it is a tag not closed on its line."""
    opener = _OPENER.search(piece)
    if opener:
        raise _bad_tag(line, piece[opener.start():].strip(), UNCLOSED)
    return piece


def _pause_seconds(value: str, line: int) -> float:
    match = _PAUSE.fullmatch(value)
    seconds = None
    if match:
        seconds = float(match.group(1)) / (1000.0 if (match.group(2) or "").lower() == "ms" else 1.0)
    if seconds is None or not 0.0 < seconds <= MAX_PAUSE_S:
        raise ScriptError(BAD_PAUSE, f"line {line}: the pause {value!r} is not a length above 0 up to "
                                  f"{MAX_PAUSE_S:g} s", line=line, value=value, max_s=MAX_PAUSE_S)
    return seconds


def _instruction(value: str, line: int, tag: str) -> str:
    """The full instruction of a tag's value (a preset's id or label, or free text)."""
    try:
        return resolve_instruction(value)
    except BadInputError:
        raise _bad_tag(line, tag, BAD_INSTRUCTION) from None


# ---------------------------------------------------------------------------- voices and plan


def resolve_voices(items: Iterable[Speech[str] | Pause], find: Callable[[str], V | None],
                   default: V | None = None) -> tuple[Speech[V] | Pause, ...]:
    """The items with each voice name replaced by `find(name)` (called once per name) and the
    request's own voice (`default`) where no voice tag came before. Every name that `find` does not
    know is refused at once, in one ScriptError UNKNOWN_VOICE with their lines; then text that
    needs `default` when it is None, in one ScriptError NO_VOICE."""
    items = tuple(items)
    found: dict[str, V | None] = {}
    unknown: dict[str, list[int]] = {}
    orphans: list[int] = []
    for item in items:
        if not isinstance(item, Speech):
            continue
        if item.voice is None:
            if default is None and item.line not in orphans:
                orphans.append(item.line)
            continue
        if item.voice not in found:
            found[item.voice] = find(item.voice)
        lines = unknown.setdefault(item.voice, []) if found[item.voice] is None else None
        if lines is not None and item.line not in lines:
            lines.append(item.line)
    if unknown:
        voices = [{"name": name, "lines": lines} for name, lines in unknown.items()]
        raise ScriptError(UNKNOWN_VOICE, f"unknown voices: {voices}", voices=voices)
    if orphans:
        raise ScriptError(NO_VOICE, f"lines {orphans} come before any voice tag and no voice is chosen", lines=orphans)
    return tuple(replace(item, voice=default if item.voice is None else found[item.voice])
                 if isinstance(item, Speech) else item for item in items)


def library_finder(library, owner: str) -> Callable[[str], object | None]:
    """A `find` for `resolve_voices` over the owner's saved voices (webui/voices.py's
    VoiceLibrary, listed once): a name -> its VoiceInfo, by id, then by the exact name (whitespace
    collapsed), then by the name ignoring case when only one voice has it; None when none."""
    voices = library.list(owner)
    by_id = {v.voice_id: v for v in voices}
    by_name = {v.name: v for v in voices}
    by_folded: dict[str, list] = {}
    for v in voices:
        by_folded.setdefault(v.name.casefold(), []).append(v)

    def find(name: str):
        name = " ".join(name.split())
        if name in by_id or name in by_name:
            return by_id.get(name) or by_name[name]
        matches = by_folded.get(name.casefold(), [])
        return matches[0] if len(matches) == 1 else None

    return find


def plan(items: Iterable[Speech[V] | Pause], transcript: Callable[[V], str] = lambda voice: voice.text
         ) -> tuple[Synthesis[V] | Pause, ...]:
    """The syntheses of a resolved script, in order, with its pauses: instruct mode where an
    instruction is given, else zero-shot with the voice's transcript (`transcript(voice)`; a voice
    without one runs cross-lingual, as `cosyvoice3.modes.effective_mode` says)."""
    steps: list[Synthesis[V] | Pause] = []
    for item in items:
        if isinstance(item, Pause):
            steps.append(item)
        elif item.instruction:
            steps.append(Synthesis(item.voice, INSTRUCT, item.text, item.instruction, item.line))
        else:
            steps.append(Synthesis(item.voice, effective_mode(ZERO_SHOT, transcript(item.voice)), item.text, "",
                                   item.line))
    return tuple(steps)
