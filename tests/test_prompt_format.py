"""The LLM text per synthesis mode."""

import pytest

from cosyvoice3.errors import BadInputError, EmptyTextError
from cosyvoice3.frontend.prompt_format import SYSTEM_PROMPT, LLMText, format_llm_text
from worker.protocol import CROSS_LINGUAL, INSTRUCT, ZERO_SHOT


def test_zero_shot_adds_the_system_prompt_to_the_transcript():
    got = format_llm_text(ZERO_SHOT, "今天天气很好。", prompt_text=" 希望你以后能够做的比我还好呦。 ")
    assert got == LLMText("You are a helpful assistant.<|endofprompt|>希望你以后能够做的比我还好呦。", "今天天气很好。", True)


def test_zero_shot_keeps_a_transcript_that_has_the_marker():
    own = "You are a helpful assistant. Speak calmly.<|endofprompt|>Hello there."
    assert format_llm_text(ZERO_SHOT, "Hi.", prompt_text=own).prompt_text == own


def test_zero_shot_without_transcript_is_bad_input():
    with pytest.raises(BadInputError, match="transcript"):
        format_llm_text(ZERO_SHOT, "Hi.", prompt_text="  ")


def test_cross_lingual_puts_the_system_prompt_in_the_tts_text():
    got = format_llm_text(CROSS_LINGUAL, "Hello world.", prompt_text="ignored")
    assert got == LLMText("", SYSTEM_PROMPT + "Hello world.", False)
    marked = "You are a helpful assistant.<|endofprompt|>[breath]因为他们那一辈人"
    assert format_llm_text(CROSS_LINGUAL, marked).tts_text == marked


def test_instruct_uses_the_resolved_instruction():
    got = format_llm_text(INSTRUCT, "好的。", instruction="sichuan")
    assert got == LLMText("You are a helpful assistant. 请用四川话表达。<|endofprompt|>", "好的。", False)
    with pytest.raises(BadInputError):
        format_llm_text(INSTRUCT, "好的。", instruction="")


def test_bad_mode_and_empty_text():
    with pytest.raises(BadInputError):
        format_llm_text("vc", "Hi.")
    with pytest.raises(EmptyTextError):
        format_llm_text(CROSS_LINGUAL, "  ")
