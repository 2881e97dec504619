"""The text front end of a request: normalise, split, drop punctuation, markup spoken as written."""

from pathlib import Path

import pytest

from cosyvoice3.errors import EmptyTextError
from cosyvoice3.frontend.text import prepare_segments
from cosyvoice3.frontend.text_normalize import TextNormalizer
from cosyvoice3.frontend.text_split import segment_bound
from cosyvoice3.frontend.tokenizer import TextTokenizer

QWEN_DIR = Path(__file__).resolve().parent / "golden" / "model" / "CosyVoice-BlankEN"


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer.from_dir(QWEN_DIR)


@pytest.fixture(scope="module")
def normalizer():
    return TextNormalizer().load()


def test_normalised_then_split(tokenizer, normalizer):
    assert prepare_segments(" 我今年25岁，出生于2001年 ", tokenizer, normalizer) == ["我今年二十五岁，出生于二零零一年。"]
    assert prepare_segments("Room 1508 is on the 15th floor", tokenizer, normalizer) == \
        ["Room fifteen zero eight is on the fifteenth floor."]


def test_punctuation_only_segments_are_dropped_and_empty_text_refused(tokenizer, normalizer):
    long = "一" * 70 + "。"
    assert prepare_segments(long + long + "……" * 15, tokenizer, normalizer) == [long, long]
    with pytest.raises(EmptyTextError):
        prepare_segments("  \n ", tokenizer, normalizer)
    with pytest.raises(EmptyTextError):
        prepare_segments("。。。!!", tokenizer, normalizer)


def test_markup_and_unnormalised_text_are_spoken_as_written(tokenizer, normalizer):
    marked = "You are a helpful assistant.<|endofprompt|>[breath]因为他们那一辈人123。很长。"
    assert prepare_segments(marked, tokenizer, normalizer) == [marked]
    assert prepare_segments("raw 123", tokenizer, normalizer, normalize=False) == ["raw 123"]


def test_long_markup_text_is_still_bounded(tokenizer, normalizer):
    marked = "You are a helpful assistant.<|endofprompt|>" + "Hello there 123. " * 80
    segments = prepare_segments(marked, tokenizer, normalizer)
    assert len(segments) > 1 and "".join(segments) == marked.rstrip() + "." * (not marked.rstrip().endswith("."))
    assert "<|endofprompt|>" in segments[0] and "123" in segments[-1]
    assert all(len(tokenizer.encode(s)) <= segment_bound() for s in segments)
