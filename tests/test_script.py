"""Dialogue scripts (webui/script.py): what is a script, the tags and their scopes, refusals with
their line numbers and their English and Chinese sentences, voices looked up in a real voice
library, and the plan of syntheses."""

import numpy as np
import pytest

from cosyvoice3.frontend.instructions import preset, wrap_instruction
from cosyvoice3.frontend.prompt import PreparedPrompt
from cosyvoice3.modes import CROSS_LINGUAL, INSTRUCT, MODES, ZERO_SHOT
from webui import messages as M
from webui import script as S
from webui.presets import preset_choices
from webui.script import Pause, Speech, Synthesis
from webui.voices import VoiceInfo, VoiceLibrary

CANTONESE = preset("cantonese").instruction


def speeches(items):
    return [(i.text, i.voice, i.instruction, i.line) for i in items if isinstance(i, Speech)]


def refusal(text, reason):
    with pytest.raises(S.ScriptError) as caught:
        S.parse(text)
    assert caught.value.reason == reason and caught.value.code == "bad_input"
    return caught.value


def resolve_refusal(items, find, default=None):
    with pytest.raises(S.ScriptError) as caught:
        S.resolve_voices(items, find, default)
    return caught.value


# ---------------------------------------------------------------------------- what is a script


@pytest.mark.parametrize("text", ["[voice:Alice] hi", "hi [pause:1s] there", "[instruction:sad]\nhi",
                                  "[Voice : Alice] hi", "[PAUSE：800ms] hi"])
def test_a_text_with_a_voice_pause_or_instruction_tag_is_a_script(text):
    assert S.is_script(text)


@pytest.mark.parametrize("text", ["", "Hello [laughter] there [breath].", "see [note: page 3]", "[voice:Alice",
                                  "[voice:A\nlice] hi", "<|endofprompt|>", "[AY1] [voice Alice]"])
def test_other_texts_are_not_scripts(text):
    # an unclosed tag does not make a script either: such a text keeps its plain meaning
    assert not S.is_script(text)


def test_an_empty_voice_tag_marks_a_script_that_is_then_refused():
    assert S.is_script("[voice:]x")
    assert refusal("[voice:]x", S.BAD_TAG).params == {"line": 1, "tag": "[voice:]", "problem": S.EMPTY}


# ---------------------------------------------------------------------------- voices


def test_text_before_any_voice_tag_uses_the_requests_voice_and_a_voice_lasts_to_the_next():
    items = S.parse("Intro line.\n[voice:Alice] One.\nTwo.\n[voice:Bob] Three.\nFour.")
    assert speeches(items) == [("Intro line.", None, None, 1), ("One.", "Alice", None, 2), ("Two.", "Alice", None, 3),
                               ("Three.", "Bob", None, 4), ("Four.", "Bob", None, 5)]


def test_several_voice_tags_on_one_line_each_start_a_part_of_it():
    items = S.parse("[voice:Alice] Hi Bob. [voice:Bob] Hi Alice! [voice: Carol  Ann ] Hello both.")
    assert speeches(items) == [("Hi Bob.", "Alice", None, 1), ("Hi Alice!", "Bob", None, 1),
                               ("Hello both.", "Carol Ann", None, 1)]


def test_a_voice_tag_alone_on_its_line_switches_for_the_lines_below():
    items = S.parse("[voice:Alice]\n\nHello.\n[voice:Bob]\nBye.")
    assert speeches(items) == [("Hello.", "Alice", None, 3), ("Bye.", "Bob", None, 5)]


def test_empty_lines_and_punctuation_only_parts_make_no_speech():
    items = S.parse("[voice:A] Hi.\n\n   \n... [voice:B] !!! \n[voice:C]。\nEnd.")
    assert speeches(items) == [("Hi.", "A", None, 1), ("End.", "C", None, 6)]


def test_cosyvoice_tags_and_markup_stay_in_the_text_as_written():
    items = S.parse("[voice:A] Well [laughter] that was [breath] funny, [AY1] <strong>really</strong>.")
    assert speeches(items) == [("Well [laughter] that was [breath] funny, [AY1] <strong>really</strong>.", "A", None, 1)]
    assert speeches(S.parse("[voice:A]\n[laughter]")) == [("[laughter]", "A", None, 2)]  # a laugh alone is speech


def test_line_numbers_follow_every_kind_of_line_break():
    items = S.parse("[voice:A] one\r\ntwo\rthree\n\nfour")
    assert [(i.text, i.line) for i in items] == [("one", 1), ("two", 2), ("three", 3), ("four", 5)]


# ---------------------------------------------------------------------------- pauses


@pytest.mark.parametrize("value, seconds", [("0.8s", 0.8), ("800ms", 0.8), ("1.5", 1.5), (" 2 S ", 2.0),
                                            ("10s", 10.0), ("10000ms", 10.0), (".25s", 0.25), ("1ms", 0.001)])
def test_pause_lengths(value, seconds):
    items = S.parse(f"[voice:A] a [pause:{value}] b")
    assert [i for i in items if isinstance(i, Pause)] == [Pause(pytest.approx(seconds), 1)]


def test_a_pause_cuts_its_line_and_keeps_the_voice_and_instruction():
    items = S.parse("[voice:A] [instruction:cantonese] one [pause:1s] two\n[pause:500ms]\nthree")
    assert items == (Speech("one", 1, "A", CANTONESE), Pause(1.0, 1), Speech("two", 1, "A", CANTONESE),
                     Pause(0.5, 2), Speech("three", 3, "A", None))
    assert Pause(0.8, 1).samples(24000) == 19200 and Pause(1 / 3, 1).samples(24000) == 8000


@pytest.mark.parametrize("value", ["0s", "0", "10.5s", "10001ms", "-1s", "1.5 minutes", "abc", "1e3ms", "1,5s",
                                   "1s2", "ms"])
def test_nonsense_pauses_are_refused_with_their_line(value):
    error = refusal(f"[voice:A] fine\nstill fine\nthen [pause:{value}] not", S.BAD_PAUSE)
    assert error.params == {"line": 3, "value": value.strip(), "max_s": S.MAX_PAUSE_S}
    assert error.reason == "script_bad_pause"
    en, zh = (M.script_sentence(error.reason, error.params, lang) for lang in (M.EN, M.ZH))
    assert en.startswith("Line 3:") and f"“{value.strip()}”" in en and "10 s" in en
    assert zh.startswith("第 3 行") and f"“{value.strip()}”" in zh and "10 秒" in zh


def test_the_pauses_of_a_script_are_bounded_together():
    at_the_bound = "[voice:A] x\n" + "[pause:10s]" * 20 + "\n" + "[pause:10000ms]" * 10 + "\ny"
    assert sum(i.seconds for i in S.parse(at_the_bound) if isinstance(i, Pause)) == pytest.approx(S.MAX_TOTAL_PAUSE_S)
    error = refusal(at_the_bound + "\nz [pause:1ms]", S.TOO_MUCH_PAUSE)
    assert error.params == {"line": 5, "max_s": S.MAX_TOTAL_PAUSE_S}
    assert M.script_sentence(error.reason, error.params, M.EN).startswith("Line 5: the pauses up to here add up to "
                                                                          "more than 300 s")
    assert M.script_sentence(error.reason, error.params, M.ZH).startswith("第 5 行：到此为止的停顿合计超过 300 秒")


# ---------------------------------------------------------------------------- instructions


def test_an_instruction_covers_the_rest_of_its_line_whatever_the_voice():
    items = S.parse("[voice:A] plain [instruction:cantonese] said [voice:B] and answered\n[voice:A] plain again")
    assert speeches(items) == [("plain", "A", None, 1), ("said", "A", CANTONESE, 1), ("and answered", "B", CANTONESE, 1),
                               ("plain again", "A", None, 2)]


def test_an_instruction_alone_on_its_line_is_for_the_next_line_with_text():
    text = "[voice:A] before\n[instruction:Cantonese]\n\n[pause:1s]\n[voice:B]\nthis one [pause:0.5s] all of it\nnot this"
    items = S.parse(text)
    assert speeches(items) == [("before", "A", None, 1), ("this one", "B", CANTONESE, 6),
                               ("all of it", "B", CANTONESE, 6), ("not this", "B", None, 7)]


@pytest.mark.parametrize("value", ["cantonese", "广东话", "Cantonese", " CANTONESE ", "请用广东话表达。", CANTONESE,
                                   next(label for label, pid in preset_choices() if pid == "cantonese")])
def test_instruction_values_resolve_as_the_page_resolves_them(value):
    assert speeches(S.parse(f"[instruction:{value}] hi"))[0][2] == CANTONESE


def test_free_text_instructions_are_wrapped_and_a_later_tag_replaces_an_earlier_one():
    items = S.parse("[instruction:Speak   like a pirate.] Ahoy [instruction:sad] alas")
    assert speeches(items) == [("Ahoy", None, wrap_instruction("Speak like a pirate."), 1),
                               ("alas", None, preset("sad").instruction, 1)]


def test_an_instruction_that_reaches_no_text_is_refused_at_its_line():
    error = refusal("[voice:A] hi\n[instruction:sad]\n\n[pause:1s]", S.BAD_TAG)
    assert error.params == {"line": 2, "tag": "[instruction:sad]", "problem": S.NO_TEXT}
    replaced = refusal("[voice:A] hi\n[instruction:sad] [instruction:happy]\n", S.BAD_TAG)
    assert replaced.params["tag"] == "[instruction:happy]"


def test_an_instruction_the_model_cannot_take_is_refused():
    error = refusal("[voice:A] hi\n[instruction:<|endofprompt|> more] there", S.BAD_TAG)
    assert error.params["line"] == 2 and error.params["problem"] == S.BAD_INSTRUCTION


# ---------------------------------------------------------------------------- other refusals


@pytest.mark.parametrize("text, line, tag, problem", [
    ("[voice:A] hi\n[vocie:Bob] there", 2, "[vocie:Bob]", S.UNKNOWN),
    ("[voice:A] hi [speed:1.2] there", 1, "[speed:1.2]", S.UNKNOWN),
    ("a\nb\n[voice:A] hi [voice:Bob there", 3, "[voice:Bob there", S.UNCLOSED),
    ("[voice:A] hi [voice:Bob [laughter] there", 1, "[voice:Bob [laughter] there", S.UNCLOSED),
    ("[voice:A]\n\n[pause: ]", 3, "[pause: ]", S.EMPTY),
    ("[voice:A]\n[instruction:] x", 2, "[instruction:]", S.EMPTY),
])
def test_bad_tags_are_refused_with_their_line_and_problem(text, line, tag, problem):
    error = refusal(text, S.BAD_TAG)
    assert error.params == {"line": line, "tag": tag, "problem": problem}
    en, zh = (M.script_sentence(error.reason, error.params, lang) for lang in (M.EN, M.ZH))
    assert en.startswith(f"Line {line}: ") and f"“{tag}”" in en and "[voice:NAME]" in en
    assert zh.startswith(f"第 {line} 行：") and f"“{tag}”" in zh and "[voice:名称]" in zh


def test_a_long_bad_tag_is_quoted_shortened():
    error = refusal("[voice:A] x [vocie:" + "B" * 200 + "] y", S.BAD_TAG)
    assert len(error.params["tag"]) == S.SHOWN_TAG_CHARS and error.params["tag"].endswith("…")


@pytest.mark.parametrize("text", ["[voice:A]", "[voice:A] [pause:1s]\n\n[voice:B] ...", "[pause:2s]"])
def test_a_script_with_nothing_to_speak_is_refused(text):
    error = refusal(text, S.EMPTY_SCRIPT)
    assert error.reason == "script_empty" and error.params == {}
    assert "no text" in M.script_sentence(error.reason, error.params, M.EN)
    assert "没有要朗读的文本" in M.script_sentence(error.reason, error.params, M.ZH)


# ---------------------------------------------------------------------------- resolving voices


def make_prompt(text="hello", seed=0) -> PreparedPrompt:
    rng = np.random.default_rng(seed)
    return PreparedPrompt(speech_tokens=rng.integers(0, 6561, 12), embedding=rng.standard_normal(192),
                          mel=rng.standard_normal((24, 80)), text=text, duration_s=0.48)


@pytest.fixture
def library(tmp_path):
    voices = VoiceLibrary(tmp_path)
    voices.save("me", "Alice", make_prompt("Alice's transcript."))
    voices.save("me", "Bob  Smith", make_prompt(""))
    voices.save("me", "Case", make_prompt("upper"))
    voices.save("me", "case", make_prompt("lower"))
    voices.save("someone else", "Carol", make_prompt("Carol's"))
    return voices


def test_voices_are_found_by_name_or_id_of_the_owner_only(library):
    find = S.library_finder(library, "me")
    alice = find("Alice")
    assert alice.name == "Alice" and find(alice.voice_id) == alice and find("alice") == alice
    assert find("Bob Smith").name == find(" bob   smith ").name == "Bob Smith"
    assert find("Case").text == "upper" and find("case").text == "lower" and find("CASE") is None  # two by case
    assert find("Carol") is None and find("Nobody") is None


def test_all_unknown_voices_are_refused_at_once_with_their_lines(library):
    text = "[voice:Alice] one\n[voice:Carol] two\nthree [voice:Dan] four\n[voice:Carol] five [voice:Alice] six"
    asked = []

    def find(name):
        asked.append(name)
        return S.library_finder(library, "me")(name)

    error = resolve_refusal(S.parse(text), find)
    assert error.code == "bad_input" and error.reason == S.UNKNOWN_VOICE == "script_unknown_voice"
    assert error.params == {"voices": [{"name": "Carol", "lines": [2, 3, 4]}, {"name": "Dan", "lines": [3]}]}
    assert asked == ["Alice", "Carol", "Dan"]  # each name looked up once
    en = M.script_sentence(error.reason, error.params, M.EN)
    assert en == ("Not among your saved voices: “Carol” (lines 2, 3, 4), “Dan” (line 3). "
                  "Save the voice first, or check the name.")
    zh = M.script_sentence(error.reason, error.params, M.ZH)
    assert zh == "已保存的音色中没有：“Carol”（第 2、3、4 行）、“Dan”（第 3 行）。请先保存该音色，或检查名称。"


def test_text_before_any_voice_tag_needs_the_requests_voice(library):
    items = S.parse("Intro.\nMore intro.\n[voice:Alice] Hi.")
    error = resolve_refusal(items, S.library_finder(library, "me"))
    assert error.reason == S.NO_VOICE and error.params == {"lines": [1, 2]}
    assert M.script_sentence(error.reason, error.params, M.EN).startswith("Text on lines 1, 2 comes before")
    assert M.script_sentence(error.reason, error.params, M.ZH).startswith("第 1、2 行在任何 [voice:名称]")
    page_voice = object()
    resolved = S.resolve_voices(items, S.library_finder(library, "me"), default=page_voice)
    assert [i.voice for i in resolved][:2] == [page_voice, page_voice] and resolved[2].voice.name == "Alice"


def test_unknown_voices_are_named_before_a_missing_default():
    assert resolve_refusal(S.parse("intro\n[voice:X] hi"), lambda name: None).reason == S.UNKNOWN_VOICE


# ---------------------------------------------------------------------------- plan


def test_plan_gives_each_line_its_voice_and_mode(library):
    text = ("Narrator here.\n[voice:Alice] Hello Bob. [pause:0.8s]\n[voice:Bob Smith] Hi!\n"
            "[instruction:cantonese] [voice:Alice] 你好。")
    page_voice = VoiceInfo("page", "page", "the page's transcript", 1.0, 0, 0)
    steps = S.plan(S.resolve_voices(S.parse(text), S.library_finder(library, "me"), default=page_voice))
    alice, bob = S.library_finder(library, "me")("Alice"), S.library_finder(library, "me")("Bob Smith")
    assert steps == (Synthesis(page_voice, ZERO_SHOT, "Narrator here.", "", 1),
                     Synthesis(alice, ZERO_SHOT, "Hello Bob.", "", 2),
                     Pause(0.8, 2),
                     Synthesis(bob, CROSS_LINGUAL, "Hi!", "", 3),  # saved without a transcript
                     Synthesis(alice, INSTRUCT, "你好。", CANTONESE, 4))
    assert all(step.mode in MODES for step in steps if isinstance(step, Synthesis))


def test_plan_takes_the_transcript_from_the_caller():
    items = S.resolve_voices(S.parse("[voice:a] x\n[voice:b] y"), {"a": ("A", "said"), "b": ("B", "")}.get)
    steps = S.plan(items, transcript=lambda voice: voice[1])
    assert [(s.voice[0], s.mode) for s in steps] == [("A", ZERO_SHOT), ("B", CROSS_LINGUAL)]


# ---------------------------------------------------------------------------- the message table


def test_every_script_reason_has_both_languages_and_every_tag_problem_a_sentence():
    assert set(M.SCRIPT_PROBLEMS) == set(S.REASONS) and len(set(S.REASONS)) == 6 and set(M.SCRIPT_TAG_PROBLEMS) == set(S.TAG_PROBLEMS)
    for problem in S.TAG_PROBLEMS:
        zh = M.script_sentence(S.BAD_TAG, {"line": 7, "tag": "[x:y]", "problem": problem}, M.ZH)
        assert any("\u4e00" <= ch <= "\u9fff" for ch in zh) and "第 7 行" in zh
    sentences = {M.script_sentence(S.BAD_TAG, {"line": 1, "tag": "[x:y]", "problem": p}, M.EN)
                 for p in S.TAG_PROBLEMS}
    assert len(sentences) == len(S.TAG_PROBLEMS)
