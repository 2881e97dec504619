"""The request spec's one validator: what it resolves, what it refuses and with which reason."""

import dataclasses

import pytest

from cosyvoice3 import errors
from cosyvoice3.modes import CROSS_LINGUAL, INSTRUCT, MAX_SEED, ZERO_SHOT, Limits
from cosyvoice3.spec import SpeechSpec, check_spec

LIMITS = Limits(max_text_chars=20)


def test_a_checked_spec_is_resolved_and_checking_it_again_changes_nothing():
    asked = [SpeechSpec("  Hi. ", ZERO_SHOT, "  my words ", "ignored", None, None, 1),
             SpeechSpec("Hi.", ZERO_SHOT, "   "),
             SpeechSpec("Hi.", INSTRUCT, "", "广东话 · Cantonese", MAX_SEED, 2.0, False)]
    checked = [check_spec(spec, LIMITS) for spec in asked]
    assert checked[0] == SpeechSpec("Hi.", ZERO_SHOT, "my words", "", 0, 1.0, True)
    assert checked[1].mode == CROSS_LINGUAL  # zero-shot without a transcript
    assert checked[2].instruction == "You are a helpful assistant. 请用广东话表达。<|endofprompt|>"
    assert [check_spec(spec, LIMITS) for spec in checked] == checked


@pytest.mark.parametrize("change,error,params", [
    (dict(text=" "), errors.EmptyTextError, {}),
    (dict(text="x" * 21), errors.TextTooLongError, {"n": 21, "limit": 20}),
    (dict(mode="sing"), errors.UnknownModeError, {"mode": "sing"}),
    (dict(speed=3.0), errors.BadSpeedError, {"speed": 3.0}),
    (dict(speed="fast"), errors.BadSpeedError, {}),
    (dict(seed=MAX_SEED + 1), errors.BadSeedError, {"seed": MAX_SEED + 1}),
    (dict(seed=1.5), errors.BadSeedError, {"seed": 1.5}),
    (dict(mode=INSTRUCT, instruction="  "), errors.BadInstructionError, {"detail": ""}),
])
def test_each_refusal_names_its_rule_and_numbers(change, error, params):
    with pytest.raises(error) as refused:
        check_spec(dataclasses.replace(SpeechSpec("Hi."), **change), LIMITS)
    assert params.items() <= refused.value.params.items()
    assert refused.value.code in ("bad_input", "too_long")
    reasons = {c.reason for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.BadInputError)}
    assert len(reasons) == len([c for c in vars(errors).values()
                                if isinstance(c, type) and issubclass(c, errors.BadInputError)])  # one reason each
