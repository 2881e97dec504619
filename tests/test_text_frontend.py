"""The text front end of a request: normalise, split, drop punctuation, markup spoken as written."""

from pathlib import Path

import pytest

from cosyvoice3.errors import EmptyTextError
import re

from cosyvoice3.frontend.text import WHOLE_TEXT_CHARS, SegmentPlan, prepare_segments, text_blocks
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


EN_CHAPTER = " ".join(f"Room {n} opened on {n % 28 + 1} May 2025 at 3:30 pm; it cost $4.50, e.g. a lot." for n in range(40))
ZH_CHAPTER = "".join(f"第{n}章写于2025年5月{n % 28 + 1}日下午3点30分，价格是4.5元。" for n in range(60))


def unspaced(text: str) -> str:
    return re.sub(r"\s", "", text)


@pytest.mark.parametrize("chapter", [EN_CHAPTER, ZH_CHAPTER], ids=["en", "zh"])
def test_a_long_text_read_in_blocks_has_the_readings_of_the_whole(chapter, tokenizer, normalizer):
    assert len(chapter) > WHOLE_TEXT_CHARS
    blocks = text_blocks(chapter)
    assert "".join(blocks) == chapter and len(blocks) > 5
    segments = prepare_segments(chapter, tokenizer, normalizer)
    assert unspaced("".join(segments)) == unspaced(normalizer.normalize(chapter))
    assert all(len(s if re.search(r"[\u4e00-\u9fff]", chapter) else tokenizer.encode(s)) <= segment_bound() for s in segments)


def test_blocks_are_read_in_the_language_of_the_whole_text(tokenizer, normalizer):
    chapter = ZH_CHAPTER + "\n" + "Room 25 is open. " * 12  # the last block has no CJK: still the zh grammar
    assert not re.search(r"[\u4e00-\u9fff]", text_blocks(chapter)[-1])
    assert "二十五" in prepare_segments(chapter, tokenizer, normalizer)[-1]
    assert "twenty" in normalizer.normalize("Room 25 is open.")


def test_a_plan_reads_one_block_per_step(tokenizer, normalizer):
    plan = SegmentPlan(EN_CHAPTER, tokenizer, normalizer)
    read, blocks = plan.progress
    assert (read, blocks) == (0, len(text_blocks(EN_CHAPTER))) and not plan.done
    plan.step()
    assert plan.progress == (1, blocks) and not plan.done
    assert plan.finish() == prepare_segments(EN_CHAPTER, tokenizer, normalizer) and plan.done
    short = SegmentPlan("Room 1508 is on the 15th floor", tokenizer, normalizer)
    assert short.progress == (0, 1)  # a text up to WHOLE_TEXT_CHARS is read whole, as the official front end does
    with pytest.raises(EmptyTextError):
        SegmentPlan("  ", tokenizer, normalizer)
