"""cosyvoice3.modes: the effective mode of a request and the checks of `Limits` (at a limit is
accepted, one past it refused, each with its error type and protocol code)."""

import pytest

from cosyvoice3.errors import BadInputError, EmptyTextError, PromptTooLongError, PromptTooShortError, TextTooLongError, TooLongError
from cosyvoice3.modes import CROSS_LINGUAL, INSTRUCT, MAX_SEED, MIN_SEED, ZERO_SHOT, Limits, check_seed, effective_mode


def test_zero_shot_without_a_transcript_runs_cross_lingual():
    assert effective_mode(ZERO_SHOT, "  ") == CROSS_LINGUAL
    assert effective_mode(ZERO_SHOT, "hello") == ZERO_SHOT
    assert effective_mode(INSTRUCT, "") == INSTRUCT


def test_limits_accept_the_limit_and_refuse_past_it():
    limits = Limits(max_text_chars=5, min_prompt_seconds=2.0, max_prompt_seconds=6.0, max_upload_bytes=10)
    assert limits.check_text("  abcde \n") == "abcde"
    with pytest.raises(TextTooLongError, match="6 characters; the limit is 5") as e:
        limits.check_text("abcdef")
    assert e.value.code == "too_long"
    with pytest.raises(EmptyTextError) as e:
        limits.check_text(" \n")
    assert e.value.code == "bad_input"
    limits.check_prompt_seconds(2.0)
    limits.check_prompt_seconds(6.0)
    with pytest.raises(PromptTooShortError, match="at least 2 s"):
        limits.check_prompt_seconds(1.999)
    with pytest.raises(PromptTooLongError, match="the limit is 6 s"):
        limits.check_prompt_seconds(6.001)
    limits.check_upload_bytes(10)
    with pytest.raises(TooLongError):
        limits.check_upload_bytes(11)


@pytest.mark.parametrize("fields", [dict(max_text_chars=0), dict(max_prompt_seconds=31.0),
                                    dict(min_prompt_seconds=5.0, max_prompt_seconds=4.0),
                                    dict(min_prompt_seconds=0.0), dict(max_upload_bytes=0)])
def test_limits_that_cannot_hold_are_refused(fields):
    with pytest.raises(ValueError):
        Limits(**fields)


def test_the_seed_range_is_the_sampler_s_32_bits_and_nothing_is_folded():
    assert (MIN_SEED, MAX_SEED) == (0, 2**32 - 1)
    assert check_seed(MIN_SEED) == 0 and check_seed(MAX_SEED) == MAX_SEED and check_seed(7.0) == 7
    for seed in (MAX_SEED + 1, 2**32 + 1, 2**63 - 1, -1, 1.5, float("nan"), float("inf"), "7", None):
        with pytest.raises(BadInputError, match="seed") as e:
            check_seed(seed)
        assert e.value.code == "bad_input"
