"""Captions of a generated audio, timed from the samples actually produced (torch-free).

Input: the audio's parts in order - `Spoken(text, voice, samples)` for each text segment (its
text, the voice name or None, how many samples it produced) and `Silence(samples)` for pauses
and any other sound without words - and the sample rate. `cues` gives one `Cue` per spoken part
with words: start and end in whole milliseconds, each the sample position rounded to the nearest
millisecond (half up), so cues never overlap, back-to-back parts share their boundary exactly, no
error adds up over a long audio, and the last cue ends within 0.5 ms of the audio's end (when the
audio ends with speech). A part's text is shown with its lines stripped and its blank lines
dropped (a blank line would end a cue); a part with no words, or with no samples, makes no cue
but its samples still count.

Writers: `to_srt` (numbered cues, `HH:MM:SS,mmm`, the voice as `Name: ` before the text; `-->`
in a text is written `→`, since SRT has no escapes), `to_vtt` (`WEBVTT`, `HH:MM:SS.mmm`, the voice
as a `<v Name>` span; `&`, `<`, `>` escaped, so `-->` cannot appear in a cue) and `to_json`
(`[{"start", "end", "text", "voice"}]`, seconds with millisecond precision, voice null when none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True)
class Spoken:
    text: str
    voice: str | None
    samples: int


@dataclass(frozen=True)
class Silence:
    samples: int


@dataclass(frozen=True)
class Cue:
    start_ms: int
    end_ms: int
    text: str
    voice: str | None

    @property
    def start(self) -> float:
        return self.start_ms / 1000

    @property
    def end(self) -> float:
        return self.end_ms / 1000


def cues(parts: Iterable[Spoken | Silence], sample_rate: int) -> list[Cue]:
    """One cue per spoken part with words, in order (see the module docstring)."""
    if sample_rate <= 0:
        raise ValueError(f"the sample rate must be positive, not {sample_rate}")
    found, position = [], 0
    for part in parts:
        if part.samples < 0:
            raise ValueError(f"a part cannot have {part.samples} samples")
        start, position = position, position + part.samples
        if isinstance(part, Spoken) and part.samples and cue_text(part.text):
            found.append(Cue(_ms(start, sample_rate), _ms(position, sample_rate), cue_text(part.text),
                             _voice_name(part.voice)))
    return found


def cue_text(text: str) -> str:
    """The text as a cue shows it: lines stripped, blank lines dropped."""
    return "\n".join(line.strip() for line in (text or "").splitlines() if line.strip())


def _voice_name(voice: str | None) -> str | None:
    return (" ".join(voice.split()) or None) if voice else None


def _ms(samples: int, sample_rate: int) -> int:
    """A sample position in whole milliseconds, to the nearest, half up (integer arithmetic)."""
    return (2 * samples * 1000 + sample_rate) // (2 * sample_rate)


def timestamp(ms: int, separator: str) -> str:
    """'HH:MM:SS<separator>mmm' (hours take more digits past 99)."""
    seconds, millis = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


def to_srt(found: Iterable[Cue]) -> str:
    blocks = []
    for number, cue in enumerate(found, start=1):
        text = cue.text.replace("-->", "→")
        body = f"{cue.voice.replace('-->', '→')}: {text}" if cue.voice else text
        blocks.append(f"{number}\n{timestamp(cue.start_ms, ',')} --> {timestamp(cue.end_ms, ',')}\n{body}\n")
    return "\n".join(blocks)


def to_vtt(found: Iterable[Cue]) -> str:
    blocks = ["WEBVTT\n"]
    for cue in found:
        body = f"<v {_vtt_escape(cue.voice)}>{_vtt_escape(cue.text)}</v>" if cue.voice else _vtt_escape(cue.text)
        blocks.append(f"{timestamp(cue.start_ms, '.')} --> {timestamp(cue.end_ms, '.')}\n{body}\n")
    return "\n".join(blocks)


def to_json(found: Iterable[Cue]) -> list[dict]:
    return [{"start": cue.start, "end": cue.end, "text": cue.text, "voice": cue.voice} for cue in found]


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
