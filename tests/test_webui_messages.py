"""Sentences for every protocol error code, the prompt problems of the real front end, languages,
and that the page's package stays free of torch."""

import subprocess
import sys

import gradio as gr
import numpy as np
import pytest

from cosyvoice3.errors import AudioDecodeError, BadInputError
from cosyvoice3.modes import Limits
from cosyvoice3.features.prepare import validate_prompt_audio
from webui import messages as M
from worker import protocol as P


@pytest.mark.parametrize("code", P.ERROR_CODES)
@pytest.mark.parametrize("lang", [M.EN, M.ZH])
def test_every_error_code_is_one_plain_sentence(code, lang):
    sentence = M.error_sentence(code, lang, "Traceback (most recent call last):\n  File x\nValueError: y")
    assert sentence and "\n" not in sentence and "Traceback" not in sentence
    assert sentence != M.error_sentence(P.INTERNAL, lang) or code == P.INTERNAL
    if lang == M.ZH:
        assert any("\u4e00" <= ch <= "\u9fff" for ch in sentence)


def test_details_are_one_line_and_only_for_request_errors():
    assert M.error_sentence(P.BAD_INPUT, M.EN, "unknown mode 'x'\nmore") == \
        "The request could not be used. (unknown mode 'x')"
    assert "secret" not in M.error_sentence(P.INTERNAL, M.EN, "secret internals")
    assert M.first_line("Traceback (most recent call last):\n  File 'a'") == "File 'a'"


def problem_of(audio, sample_rate=16000):
    with pytest.raises(BadInputError) as caught:
        validate_prompt_audio(audio, sample_rate, max_seconds=30.0, min_seconds=1.0)
    return M.prompt_problem(caught.value.reason)


def speechlike(seconds, sample_rate=16000):
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)


def test_the_front_ends_refusals_are_classified_by_their_reason():
    assert problem_of(np.zeros(16000 * 4, np.float32)) == M.SILENT
    assert problem_of(speechlike(0.4)) == M.TOO_SHORT
    assert problem_of(np.zeros(0, np.float32)) == M.TOO_SHORT
    assert problem_of(speechlike(35.0)) == M.TOO_LONG
    assert problem_of(speechlike(4.0, 8000), 8000) == M.OTHER  # sample rate too low: the detail says so
    with pytest.raises(BadInputError) as caught:  # the supervisor refuses long prompts before the worker sees them
        Limits(max_prompt_seconds=30.0).check_prompt_seconds(35.0)
    assert M.prompt_problem(caught.value.reason) == M.TOO_LONG
    assert caught.value.params == {"seconds": 35.0, "max_seconds": 30.0}
    assert M.prompt_problem(AudioDecodeError.reason) == M.UNREADABLE and M.prompt_problem("bad_input") == M.OTHER


def test_prompt_sentences_name_the_limit_and_stay_apart():
    sentences = {problem: M.prompt_sentence(problem, M.EN, 30.0) for problem in M.PROMPT_PROBLEMS}
    assert len(set(sentences.values())) == len(sentences)
    assert "30 seconds" in sentences[M.TOO_LONG]
    assert "30 秒" in M.prompt_sentence(M.TOO_LONG, M.ZH, 30.0)


def test_language_follows_the_browser():
    assert M.language(gr.Request(headers={"accept-language": "zh-CN,zh;q=0.9,en;q=0.8"})) == M.ZH
    assert M.language(gr.Request(headers={"accept-language": "en-US,en;q=0.9,zh;q=0.8"})) == M.EN
    assert M.language(None) == M.EN


def test_the_webui_package_does_not_import_torch():
    code = "import sys, webui, webui.handlers; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_both_label_tables_have_the_same_keys_and_the_fixed_english_names():
    from webui import i18n

    assert set(i18n.EN) == set(i18n.ZH)
    fixed = {"prompt_audio": "Prompt audio", "prompt_text": "Prompt text", "mode": "Mode", "instruction": "Instruction",
             "text": "Text to speak", "generate": "Generate", "output_audio": "Output audio", "status": "Status"}
    assert {key: i18n.EN[key] for key in fixed} == fixed


def test_labels_follow_the_flags_they_name(tmp_path):
    """Started with --max-prompt-seconds 20, the page offers to keep the first 20 s (both languages)."""
    from cosyvoice3.modes import Limits
    from webui import build_ui
    from webui.i18n import PREFIX, t
    from webui.synthesis import Synthesis
    from webui.voices import VoiceLibrary

    blocks = build_ui(Synthesis(None, VoiceLibrary(tmp_path / "voices"), Limits(max_prompt_seconds=20)),
                      output_dir=tmp_path / "out")
    key = PREFIX + "keep_first"
    assert [b for b in blocks.blocks.values() if isinstance(b, gr.Button) and b.value == str(t("keep_first"))]
    texts = blocks.i18n_instance.translations_dict
    assert texts["en"][key] == "Keep the first 20 s" and texts["zh-CN"][key] == "保留前 20 秒"
