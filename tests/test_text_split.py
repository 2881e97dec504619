"""Sentence splitting: the official split_paragraph where its segments are bounded, our guarantees
(bounded, nothing dropped, markers and tags whole) everywhere."""

import random
from itertools import accumulate
from pathlib import Path

import pytest

from cosyvoice3.frontend.text_markup import atoms
from cosyvoice3.frontend.text_split import segment_bound, split_segments
from cosyvoice3.frontend.tokenizer import TextTokenizer

QWEN_DIR = Path(__file__).resolve().parent / "golden" / "model" / "CosyVoice-BlankEN"
BOUND = segment_bound()
ZH_CHARS = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经"
EN_WORDS = "the quick brown fox jumps over a lazy dog while she sells sea shells by the shore".split()


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer.from_dir(QWEN_DIR)


def official_split(text, length, lang, token_max_n=80, token_min_n=60, merge_len=20):
    """split_paragraph of the official front end (reference section 2.2), restated."""
    ends = "。？！；：、.?!;" if lang == "zh" else ".?!;:"
    if text[-1] not in ends:
        text += "。" if lang == "zh" else "."
    sentences, start = [], 0
    for i, c in enumerate(text):
        if c in ends:
            if text[start:i]:
                sentences.append(text[start:i] + c)
            if i + 1 < len(text) and text[i + 1] in "\"”":
                sentences[-1] += text[i + 1]
                start = i + 2
            else:
                start = i + 1
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


def zh_text(rng, count, max_len=70, ends="。！？；，"):
    return "".join("".join(rng.choice(ZH_CHARS) for _ in range(rng.randint(3, max_len))) + rng.choice(ends)
                   for _ in range(count))


def en_text(rng, count, max_words=30, ends=".!?;,"):
    return " ".join(" ".join(rng.choice(EN_WORDS) for _ in range(rng.randint(2, max_words))).capitalize()
                    + rng.choice(ends) for _ in range(count))


@pytest.mark.parametrize("seed", range(5))
def test_same_as_official_when_its_segments_are_bounded(tokenizer, seed):
    rng = random.Random(seed)
    length = lambda s: len(tokenizer.encode(s))  # noqa: E731
    texts = (("zh", zh_text(rng, 60, ends="。！？；"), len), ("en", en_text(rng, 40, max_words=20, ends=".!?;"), length))
    for lang, text, measure in texts:
        text = text + rng.choice(["", "”", "\""])  # sometimes a closing quote, sometimes no end at all
        want = official_split(text, measure, lang)
        assert max(map(measure, want)) <= BOUND
        assert split_segments(text, tokenizer, lang) == want


def test_a_long_sentence_within_the_bound_is_not_cut(tokenizer):
    sentence = "，".join(["一二三四五六七八九"] * 15) + "。"  # 150 characters, commas only
    assert split_segments(sentence, tokenizer, "zh") == [sentence]


def test_runs_of_terminators_and_a_leading_one_are_kept(tokenizer):
    text = "。你好。……！！真的吗？！他说：“好的。”"
    assert "".join(split_segments(text, tokenizer, "zh")) == text
    assert "".join(split_segments("Really?! Yes... ok", tokenizer, "en")) == "Really?! Yes... ok."


def test_closing_quote_stays_with_its_sentence(tokenizer):
    sentences = ["“" + "一" * 70 + "。”", "“" + "二" * 70 + "！”"]
    assert split_segments("".join(sentences), tokenizer, "zh") == sentences


def test_over_long_sentences_are_cut_at_commas_first(tokenizer):
    clauses = ["".join(random.Random(i).choice(ZH_CHARS) for _ in range(50)) + "，" for i in range(12)]
    text = "".join(clauses) + "完。"
    segments = split_segments(text, tokenizer, "zh")
    assert "".join(segments) == text and len(segments) > 1
    assert all(len(s) <= BOUND and (s.endswith("，") or s == segments[-1]) for s in segments)


def test_10000_characters_zh(tokenizer):
    text = zh_text(random.Random(2), 400, max_len=120)[:10000]
    segments = split_segments(text, tokenizer, "zh")
    assert "".join(segments) in (text, text + "。")
    assert all(0 < len(s) <= BOUND for s in segments) and len(segments) > 50


def test_10000_characters_without_any_punctuation(tokenizer):
    text = zh_text(random.Random(3), 400, ends="好")[:10000]
    segments = split_segments(text, tokenizer, "zh")
    assert "".join(segments) == text + "。"
    assert all(len(s) <= BOUND for s in segments)


def test_10000_characters_en(tokenizer):
    text = en_text(random.Random(4), 400, max_words=90)[:10000].strip()
    segments = split_segments(text, tokenizer, "en")
    assert "".join(segments).rstrip(".") == text.rstrip(".")
    lengths = [len(tokenizer.encode(s)) for s in segments]
    assert max(lengths) <= BOUND and len(segments) > 20


@pytest.mark.parametrize("lang, unit", [("en", "[laughter]"), ("zh", "哈[breath]"), ("en", "<|endofprompt|>")])
def test_markers_and_tags_are_never_cut(tokenizer, lang, unit):
    text = unit * 300
    segments = split_segments(text, tokenizer, lang)
    assert len(segments) > 1 and "".join(segments).rstrip("。.") == text
    cuts = set(accumulate(map(len, segments[:-1])))
    assert cuts <= set(accumulate(map(len, atoms(text))))
    assert all(len(tokenizer.encode(s) if lang == "en" else s) <= BOUND for s in segments)


def test_blank_text_has_no_segment(tokenizer):
    assert split_segments("  ", tokenizer, "en") == []
