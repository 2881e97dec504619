"""CTC greedy decoding, the query ids and the rich-text tags of SenseVoice."""

import pytest
import torch

from asr.decoding import ctc_greedy, parse_rich_text, query_ids
from cosyvoice3.errors import BadInputError


def one_hot(ids, vocab=6):
    return torch.nn.functional.one_hot(torch.tensor(ids), vocab).float()


def test_greedy_merges_repeats_drops_blanks_and_keeps_repeats_split_by_a_blank():
    assert ctc_greedy(one_hot([0, 3, 3, 0, 3, 5, 5, 0, 0, 1])) == [3, 3, 5, 1]
    assert ctc_greedy(one_hot([0, 0, 0])) == []


def test_tags_are_taken_out_and_sorted_by_kind():
    rich = parse_rich_text("<|yue|><|HAPPY|><|Speech|><|withitn|>我哋今日去饮茶啦。")
    assert (rich.text, rich.language, rich.emotion, rich.event) == ("我哋今日去饮茶啦。", "yue", "HAPPY", "Speech")
    assert rich.raw.startswith("<|yue|>")


def test_the_first_tag_of_a_kind_wins_and_unknown_tags_are_removed():
    rich = parse_rich_text("<|en|><|NEUTRAL|><|BGM|><|woitn|>hello <|zh|><|xyz|> world")
    assert rich.language == "en" and rich.event == "BGM" and rich.text == "hello world"


def test_no_speech_gives_an_empty_transcript():
    rich = parse_rich_text("<|nospeech|><|EMO_UNKNOWN|><|Event_UNK|><|woitn|>")
    assert rich.text == "" and rich.language == "nospeech"


def test_queries_follow_the_reference_order():
    assert query_ids() == [0, 1, 2, 14]
    assert query_ids("yue", itn=False) == [7, 1, 2, 15]
    with pytest.raises(BadInputError, match="unknown recogniser language"):
        query_ids("fr")
