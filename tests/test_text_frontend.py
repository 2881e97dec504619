"""Text front end: zh/en normalisation, sentence splitting, language detection."""

import random
from pathlib import Path

import pytest

from cosyvoice3.errors import EmptyTextError
from cosyvoice3.frontend.text import (
    detect_language,
    en_cardinal,
    en_ordinal,
    en_year,
    normalize,
    prepare_segments,
    split_segments,
    zh_cardinal,
)
from cosyvoice3.frontend.tokenizer import TextTokenizer

QWEN_DIR = Path(__file__).resolve().parent / "golden" / "model" / "CosyVoice-BlankEN"
SEGMENT_BOUND = 60 + 80 + 20  # token_min_n + token_max_n + merge_len


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer.from_dir(QWEN_DIR)


@pytest.mark.parametrize("text, expected", [
    ("今天是2025年3月16日，气温-5℃，湿度50%。", "今天是二零二五年三月十六日，气温负五摄氏度，湿度百分之五十。"),
    ("我有123个苹果和3.14元，还有10050人。", "我有一百二十三个苹果和三点一四元，还有一万零五十人。"),
    ("会议在2025-03-16 14:30举行，价格¥99.5。", "会议在二零二五年三月十六日十四点三十分举行，价格九十九点五元。"),
    ("比分是3~5，概率1/3，面积5m²。", "比分是三到五，概率三分之一，面积五m平方。"),
    ("第1名，共100000人，电话13812345678", "第一名，共十万人，电话一三八一二三四五六七八"),
    ("他说：“你好 world ，hi there”", "他说：“你好world，hi there”"),
    ("A&B的结果是1+1=2", "A和B的结果是一加一等于二"),
    ("（注意）【重要】好的，", "注意重要好的。"),
    ("１２３个ｐｈｏｎｅ", "一百二十三个phone"),
    ("他来了.然后走了 - 再见", "他来了。然后走了，再见"),
])
def test_normalize_zh(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Numbers like 123 and 2025 are spelled out.",
     "Numbers like one hundred twenty-three and two thousand twenty-five are spelled out."),
    ("It costs $3.50, about 15% more; in 1999 it was -4.5°C at 10:05.",
     "It costs three dollars and fifty cents, about fifteen percent more; in nineteen ninety-nine it was "
     "minus four point five degrees Celsius at ten oh five."),
    ("The 21st century, the 1990s, 1,234,567 people & 2+2=4.",
     "The twenty-first century, the nineteen nineties, one million two hundred thirty-four thousand five "
     "hundred sixty-seven people and two plus two equals four."),
    ("Meet on 2024-02-29 at 9:00.", "Meet on February twenty-ninth, twenty twenty-four at nine o'clock."),
    ("007 and 0.5, 3~5 km, #1", "zero zero seven and zero point five, three to five km, number one"),
    ("Ｈｅｌｌｏ，ｗｏｒｌｄ！１２３", "Hello, world! one hundred twenty-three"),
])
def test_normalize_en(text, expected):
    assert normalize(text) == expected


def test_number_words():
    assert [zh_cardinal(n) for n in (0, 10, 15, 105, 1005, 110, 100000000, 100010)] == \
        ["零", "十", "十五", "一百零五", "一千零五", "一百一十", "一亿", "十万零一十"]
    assert en_cardinal(1_000_001) == "one million one" and en_cardinal(40) == "forty"
    assert [en_ordinal(n) for n in (1, 2, 3, 12, 20, 101)] == \
        ["first", "second", "third", "twelfth", "twentieth", "one hundred first"]
    assert [en_year(n) for n in (1905, 1900, 2000, 2007, 2010)] == \
        ["nineteen oh five", "nineteen hundred", "two thousand", "two thousand seven", "twenty ten"]


def test_markup_and_other_scripts_pass_through(tokenizer):
    marked = "You are a helpful assistant.<|endofprompt|>[breath]因为他们那一辈人123。很长。"
    assert normalize(marked) == marked
    assert prepare_segments(marked, tokenizer) == [marked]
    assert normalize("Я купил 5 яблок.") == "Я купил 5 яблок."


def test_detect_language():
    assert detect_language("Hello 世界") == "zh"
    assert detect_language("Hello world") == "en"
    assert detect_language("こんにちは") == "en"  # kana only: no CJK ideograph


def test_prepare_segments_drops_punctuation_only_parts_and_refuses_empty_text(tokenizer):
    assert prepare_segments("你好。……！！真的吗？！", tokenizer) == ["你好。……！！真的吗？！"]
    assert prepare_segments("Hello there", tokenizer) == ["Hello there."]
    assert prepare_segments("raw 123", tokenizer, normalize=False) == ["raw 123"]
    with pytest.raises(EmptyTextError):
        prepare_segments("  \n ", tokenizer)
    with pytest.raises(EmptyTextError):
        prepare_segments("。。。!!", tokenizer)


def official_merge(sentences, length, token_max_n=80, token_min_n=60, merge_len=20):
    """The reference's greedy merge (section 2.2), restated."""
    segments, current = [], ""
    for sentence in sentences:
        if length(current + sentence) > token_max_n and length(current) > token_min_n:
            segments.append(current)
            current = ""
        current += sentence
    if current:
        if length(current) < merge_len and segments:
            segments[-1] += current
        else:
            segments.append(current)
    return segments


def random_zh_sentences(seed: int, count: int, max_len: int = 70) -> list[str]:
    rng = random.Random(seed)
    chars = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经"
    return ["".join(rng.choice(chars) for _ in range(rng.randint(3, max_len))) + rng.choice("。！？；")
            for _ in range(count)]


def test_split_matches_the_reference_merge_for_ordinary_sentences(tokenizer):
    sentences = random_zh_sentences(1, 60)
    text = "".join(sentences)
    assert split_segments(text, tokenizer) == official_merge(sentences, len)


def test_split_10000_characters_zh(tokenizer):
    text = "".join(random_zh_sentences(2, 400, max_len=120))[:10000]
    segments = split_segments(text, tokenizer)
    assert "".join(segments).startswith(text) and len("".join(segments)) <= len(text) + 1
    assert all(0 < len(s) <= SEGMENT_BOUND for s in segments) and len(segments) > 50


def test_split_10000_characters_without_any_punctuation(tokenizer):
    text = "".join(random_zh_sentences(3, 400))[:10000].translate(str.maketrans("", "", "。！？；"))
    segments = split_segments(text, tokenizer)
    assert "".join(segments) == text + "。"
    assert all(len(s) <= SEGMENT_BOUND for s in segments)


def test_split_10000_characters_en(tokenizer):
    rng = random.Random(4)
    words = "the quick brown fox jumps over a lazy dog while she sells sea shells by the shore".split()
    parts = []
    while sum(map(len, parts)) < 10000:
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(2, 90)))
        parts.append(sentence.capitalize() + rng.choice([".", "!", "?", ",", ";"]) + " ")
    text = "".join(parts)[:10000].strip()
    segments = split_segments(text, tokenizer)
    assert "".join(segments).rstrip(".") == text.rstrip(".")
    lengths = [len(tokenizer.encode(s)) for s in segments]
    assert max(lengths) <= SEGMENT_BOUND and len(segments) > 20
