"""Instruction presets and resolving user instructions into the LLM prompt text."""

import pytest

from cosyvoice3.errors import BadInputError
from cosyvoice3.frontend.instructions import preset, presets, resolve_instruction

CANTONESE = "You are a helpful assistant. 请用广东话表达。<|endofprompt|>"


def test_the_official_list_has_26_presets():
    items = presets()
    assert len(items) == 26
    counts = {}
    for p in items:
        counts[p.category] = counts.get(p.category, 0) + 1
    assert counts == {"dialect": 17, "volume": 2, "speed": 2, "emotion": 3, "role": 2}
    assert len({p.id for p in items}) == 26 and len({p.instruction for p in items}) == 26


def test_preset_strings_are_exact():
    assert items_by_id()["cantonese"] == CANTONESE
    assert items_by_id()["loud"] == \
        "You are a helpful assistant. Please say a sentence as loudly as possible.<|endofprompt|>"
    assert items_by_id()["fast"] == "You are a helpful assistant. 请用尽可能快地语速说一句话。<|endofprompt|>"
    assert items_by_id()["robot"] == "You are a helpful assistant. 你可以尝试用机器人的方式解答吗？<|endofprompt|>"
    for p in presets():
        assert p.instruction.startswith("You are a helpful assistant. ") and p.instruction.endswith("<|endofprompt|>")
        if p.category == "dialect":
            assert p.instruction == f"You are a helpful assistant. 请用{p.label_zh}表达。<|endofprompt|>"


def items_by_id():
    return {p.id: p.instruction for p in presets()}


@pytest.mark.parametrize("value", ["cantonese", "CANTONESE", "广东话", "Cantonese", "  cantonese ", CANTONESE,
                                   "请用广东话表达。", "请用广东话表达。<|endofprompt|>",
                                   "You are a helpful assistant.   请用广东话表达。"])
def test_resolve_preset_forms(value):
    assert resolve_instruction(value) == CANTONESE


def test_resolve_free_text():
    assert resolve_instruction("Speak like a  pirate,\n slowly.") == \
        "You are a helpful assistant. Speak like a pirate, slowly.<|endofprompt|>"
    assert resolve_instruction(preset("sad").bare) == preset("sad").instruction


@pytest.mark.parametrize("value", ["", "   ", "<|endofprompt|>", "You are a helpful assistant.<|endofprompt|>",
                                   "first<|endofprompt|>second"])
def test_resolve_refuses_empty_or_misplaced_marker(value):
    with pytest.raises(BadInputError):
        resolve_instruction(value)


def test_unknown_preset_id():
    with pytest.raises(BadInputError):
        preset("klingon")
