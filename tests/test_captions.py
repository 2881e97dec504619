"""Captions (webui/captions.py): cue timing from sample counts (rounding, pauses, no drift, the
last cue at the audio's end), cue text cleaning, and the SRT, WebVTT and JSON forms, read back by
strict readers written here from the formats' rules (no subtitle library is installed)."""

import json
import random
import re

import pytest

from webui import captions as C
from webui import script as S
from webui.captions import Cue, Silence, Spoken

RATE = 24000
_SRT_TIME = r"(\d{2,}):([0-5]\d):([0-5]\d),(\d{3})"
_VTT_TIME = r"(\d{2,}):([0-5]\d):([0-5]\d)\.(\d{3})"


def _ms(match, first: int) -> int:
    h, m, s, ms = (int(match.group(first + i)) for i in range(4))
    return ((h * 60 + m) * 60 + s) * 1000 + ms


def read_srt(text: str) -> list[tuple[int, int, str]]:
    """Blocks of: the cue's number (1, 2, ...), 'start --> end', then one or more text lines."""
    assert text.endswith("\n") and "\n\n\n" not in text
    cues = []
    for number, block in enumerate(text.rstrip("\n").split("\n\n"), start=1):
        lines = block.split("\n")
        assert lines[0] == str(number)
        timing = re.fullmatch(f"{_SRT_TIME} --> {_SRT_TIME}", lines[1])
        assert timing, lines[1]
        assert len(lines) >= 3 and all(line.strip() for line in lines[2:])
        cues.append((_ms(timing, 1), _ms(timing, 5), "\n".join(lines[2:])))
    return cues


def read_vtt(text: str) -> list[tuple[int, int, str, str | None]]:
    """'WEBVTT', a blank line, then blocks of 'start --> end' and payload lines; a payload holds
    no '-->' and no bare '<' or '&'; a voice is one <v Name> span around the whole payload."""
    header, _, body = text.partition("\n\n")
    assert header == "WEBVTT" and text.endswith("\n")
    cues = []
    for block in body.rstrip("\n").split("\n\n"):
        lines = block.split("\n")
        timing = re.fullmatch(f"{_VTT_TIME} --> {_VTT_TIME}", lines[0])
        assert timing, lines[0]
        payload = "\n".join(lines[1:])
        assert payload.strip() and "-->" not in payload and all(line.strip() for line in lines[1:])
        voice = None
        span = re.fullmatch(r"<v ([^>\n]+)>(.*)</v>", payload, re.DOTALL)
        if span:
            voice, payload = unescape(span.group(1)), span.group(2)
        assert "<" not in payload and re.fullmatch(r"([^&]|&(amp|lt|gt);)*", payload, re.DOTALL)
        cues.append((_ms(timing, 1), _ms(timing, 5), unescape(payload), voice))
    return cues


def unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


# ---------------------------------------------------------------------------- timing


def test_cues_follow_the_samples_pauses_included():
    parts = [Spoken("Hello.", "Alice", RATE), Spoken("How are you?", "Alice", RATE // 2), Silence(RATE * 3 // 4),
             Spoken("Fine.", "Bob", 36000)]
    assert C.cues(parts, RATE) == [Cue(0, 1000, "Hello.", "Alice"), Cue(1000, 1500, "How are you?", "Alice"),
                                   Cue(2250, 3750, "Fine.", "Bob")]
    assert C.cues(parts, RATE)[2].start == 2.25 and C.cues(parts, RATE)[2].end == 3.75


def test_times_round_to_the_nearest_millisecond_half_up():
    # 12 samples at 24 kHz are exactly 0.5 ms; 11 are 0.458 ms; 13 are 0.542 ms
    for samples, ms in [(11, 0), (12, 1), (13, 1), (23999, 1000), (36, 2), (60, 3)]:
        assert C.cues([Spoken("x", None, samples)], RATE)[0].end_ms == ms
    assert C.cues([Spoken("x", None, 1)], 1000) == [Cue(0, 1, "x", None)]
    assert C.cues([Silence(1), Spoken("x", None, 2)], 44100)[0].start_ms == 0  # 0.0227 ms


def test_a_long_audio_neither_drifts_nor_overlaps_and_ends_with_its_last_sample():
    rng = random.Random(7)
    parts, total = [], 0
    for i in range(2000):
        part = Silence(rng.randrange(1, 30000)) if i % 7 == 3 else Spoken(f"Sentence {i}.", "V", rng.randrange(1, 200000))
        parts.append(part)
        total += part.samples
    found = C.cues(parts, RATE)
    assert len(found) == sum(isinstance(p, Spoken) for p in parts)
    assert all(a.end_ms <= b.start_ms and a.start_ms < a.end_ms for a, b in zip(found, found[1:]))
    within_half_ms = lambda ms, samples: 2 * abs(ms * RATE - samples * 1000) <= RATE  # noqa: E731
    assert within_half_ms(found[-1].end_ms, total)
    spoken, position = iter(found), 0
    for part in parts:  # every boundary is its own sample's, however far into the audio
        if isinstance(part, Spoken):
            cue = next(spoken)
            assert within_half_ms(cue.start_ms, position) and within_half_ms(cue.end_ms, position + part.samples)
        position += part.samples


def test_parts_without_words_or_samples_make_no_cue_but_their_time_counts():
    parts = [Spoken("  \n ", "A", 1000), Spoken("Hi.", "A", 0), Spoken("One.", "A", 2400), Spoken("", None, 2400),
             Spoken("Two.", "B", 2400)]
    assert C.cues(parts, RATE) == [Cue(42, 142, "One.", "A"), Cue(242, 342, "Two.", "B")]


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        C.cues([Spoken("x", None, -1)], RATE)
    with pytest.raises(ValueError):
        C.cues([Silence(-5)], RATE)
    with pytest.raises(ValueError):
        C.cues([Spoken("x", None, 1)], 0)


def test_cue_text_keeps_its_lines_without_blank_ones_and_voice_names_are_one_line():
    found = C.cues([Spoken("  first line \n\n\n   second line\n \n", " Bob \n  Smith ", 100),
                    Spoken("x", "   ", 100)], RATE)
    assert [(c.text, c.voice) for c in found] == [("first line\nsecond line", "Bob Smith"), ("x", None)]


# ---------------------------------------------------------------------------- the forms


def dialogue():
    return C.cues([Spoken("Hello, Bob.", "Alice", 30000), Silence(19200), Spoken("Hi Alice!\nHow are you?", "Bob", 50000),
                   Spoken("(narration)", None, 24000)], RATE)


def test_srt_numbers_its_cues_and_names_the_voice_before_the_text():
    srt = C.to_srt(dialogue())
    assert srt == ("1\n00:00:00,000 --> 00:00:01,250\nAlice: Hello, Bob.\n\n"
                   "2\n00:00:02,050 --> 00:00:04,133\nBob: Hi Alice!\nHow are you?\n\n"
                   "3\n00:00:04,133 --> 00:00:05,133\n(narration)\n")
    assert read_srt(srt) == [(0, 1250, "Alice: Hello, Bob."), (2050, 4133, "Bob: Hi Alice!\nHow are you?"),
                             (4133, 5133, "(narration)")]


def test_vtt_has_its_header_and_voice_spans():
    vtt = C.to_vtt(dialogue())
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.250\n<v Alice>Hello, Bob.</v>\n\n")
    assert read_vtt(vtt) == [(0, 1250, "Hello, Bob.", "Alice"), (2050, 4133, "Hi Alice!\nHow are you?", "Bob"),
                             (4133, 5133, "(narration)", None)]


def test_json_is_seconds_text_and_voice():
    assert json.loads(json.dumps(C.to_json(dialogue()))) == [
        {"start": 0.0, "end": 1.25, "text": "Hello, Bob.", "voice": "Alice"},
        {"start": 2.05, "end": 4.133, "text": "Hi Alice!\nHow are you?", "voice": "Bob"},
        {"start": 4.133, "end": 5.133, "text": "(narration)", "voice": None}]


def test_what_the_formats_cannot_hold_is_escaped():
    nasty = "a --> b <i>tag</i> & c &amp; [laughter]"
    found = C.cues([Spoken(nasty, "R&D <x>", 1000), Spoken("-->", None, 1000)], RATE)
    assert [(text, voice) for _, _, text, voice in read_vtt(C.to_vtt(found))] == [(nasty, "R&D <x>"), ("-->", None)]
    assert "<v R&amp;D &lt;x&gt;>" in C.to_vtt(found)
    srt = C.to_srt(found)
    assert "-->" not in srt.replace(" --> ", "") and read_srt(srt)[0][2] == "R&D <x>: a → b <i>tag</i> & c &amp; [laughter]"
    assert C.to_json(found)[0]["text"] == nasty  # JSON holds anything


def test_timestamps_past_a_day_and_past_99_hours():
    assert C.timestamp(((25 * 60 + 1) * 60 + 2) * 1000 + 3, ",") == "25:01:02,003"
    assert C.timestamp(100 * 3600 * 1000, ".") == "100:00:00.000"
    assert read_vtt(C.to_vtt([Cue(0, 100 * 3600 * 1000, "long", None)]))[0][1] == 100 * 3600 * 1000


def test_no_cues_give_empty_forms():
    assert C.to_srt([]) == "" and C.to_vtt([]) == "WEBVTT\n" and C.to_json([]) == []


def test_a_planned_script_gives_cues_in_its_order_with_its_voices():
    steps = S.plan(S.resolve_voices(S.parse("[voice:Alice] One. [pause:0.5s]\n[voice:Bob] Two.\n[voice:Alice] Three."),
                                    {"Alice": "Alice", "Bob": "Bob"}.get), transcript=lambda voice: "known")
    parts = [Silence(step.samples(RATE)) if isinstance(step, S.Pause) else Spoken(step.text, step.voice, 12000)
             for step in steps]
    assert [(c.start, c.end, c.text, c.voice) for c in C.cues(parts, RATE)] == [
        (0.0, 0.5, "One.", "Alice"), (1.0, 1.5, "Two.", "Bob"), (1.5, 2.0, "Three.", "Alice")]
