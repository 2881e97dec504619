"""Cutting a normalised text into synthesis segments, as the official `split_paragraph` does.

The official rules (reference section 2.2; token_max_n 80, token_min_n 60, merge_len 20,
comma_split=False): lengths are characters for zh text and Qwen tokens for en text; the
terminators are `。？！；：、.?!;` (zh) and `.?!;:` (en); a text that does not end in one gets
`。` / `.`; the text is cut after each terminator, a closing quote (`"` or `”`) right after one
staying with its sentence; sentences are merged greedily: the segment so far is closed before a
sentence that would take it past token_max_n when it is already longer than token_min_n; a last
segment shorter than merge_len joins the one before. Commas never end a sentence.

Our guarantees, which the official code does not give:
- nothing is dropped: a run of terminators (`？！`, `...`) stays with its sentence, as does a
  terminator at the very start (the official cut keeps only the first of a run);
- every segment is at most `segment_bound()` long: a segment that the official rules make longer
  (it holds a sentence longer than token_max_n) is cut again - after sentence ends of either
  language, then after commas, then after blanks, then between characters - into pieces of at
  most token_max_n, which the same greedy merge joins (so at most token_min_n + token_max_n +
  merge_len - 1 long). Any text whose official segments are all within the bound is split
  exactly as the official code splits it;
- `<|...|>` markers and special-token tags are never cut (`text_markup.atoms`).
"""

from __future__ import annotations

import re
from typing import Callable, Protocol

from cosyvoice3.frontend.text_markup import atoms

TOKEN_MAX_N, TOKEN_MIN_N, MERGE_LEN = 80, 60, 20

_TERMINATORS = {"zh": "。？！；：、.?!;", "en": ".?!;:"}
_END = {"zh": "。", "en": "."}
_CLOSING_QUOTES = "\"”"
# Where a segment that is too long is cut again, coarsest first (then between characters).
_RECUT = (re.compile(r"(?<=[。？！；：、.?!;:])(?![。？！；：、.?!;:\"”])"), re.compile(r"(?<=[，,])"),
          re.compile(r"(?<=\s)(?=\S)"))


class Encoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


def segment_bound(token_max_n: int = TOKEN_MAX_N, token_min_n: int = TOKEN_MIN_N, merge_len: int = MERGE_LEN) -> int:
    """The longest segment `split_segments` returns (characters for zh, tokens for en)."""
    return token_min_n + token_max_n + merge_len


def split_segments(text: str, tokenizer: Encoder, lang: str, token_max_n: int = TOKEN_MAX_N,
                   token_min_n: int = TOKEN_MIN_N, merge_len: int = MERGE_LEN) -> list[str]:
    """Cut text into segments; lang "zh" or "en"; tokenizer: encode(text) -> ids (en lengths).

    The segments joined give the text back, plus the terminator added at the end when it had
    none. A blank text gives no segment.
    """
    if not text.strip():
        return []
    terminators = _TERMINATORS[lang]
    length: Callable[[str], int] = len if lang == "zh" else (lambda s: len(tokenizer.encode(s)))
    unquoted = text.rstrip(_CLOSING_QUOTES)
    if not unquoted or unquoted[-1] not in terminators:
        text += _END[lang]
    bound = segment_bound(token_max_n, token_min_n, merge_len)
    merge = lambda parts: _merge(parts, length, token_max_n, token_min_n, merge_len)  # noqa: E731
    segments = []
    for segment in merge(_cut_sentences(text, terminators)):
        if length(segment) <= bound:
            segments.append(segment)
        else:
            segments.extend(merge(_pieces(segment, length, token_max_n)))
    return segments


def _cut_sentences(text: str, terminators: str) -> list[str]:
    """Cut after each run of terminators; a closing quote right after stays with the sentence."""
    sentences, start, i = [], 0, 0
    while i < len(text):
        if text[i] in terminators:
            while i + 1 < len(text) and text[i + 1] in terminators:
                i += 1
            if i + 1 < len(text) and text[i + 1] in _CLOSING_QUOTES:
                i += 1
            sentences.append(text[start:i + 1])
            start = i + 1
        i += 1
    if start < len(text):
        sentences.append(text[start:])
    return sentences


def _merge(sentences: list[str], length, token_max_n: int, token_min_n: int, merge_len: int) -> list[str]:
    """The official greedy merge of sentences into segments."""
    segments, current = [], ""
    for sentence in sentences:
        if length(current + sentence) > token_max_n and length(current) > token_min_n:
            segments.append(current)
            current = ""
        current += sentence
    if current:
        if segments and length(current) < merge_len:
            segments[-1] += current
        else:
            segments.append(current)
    return segments


def _pieces(text: str, length, limit: int, level: int = 0) -> list[str]:
    """Cut text into consecutive pieces of at most limit, at the coarsest breaks that do it."""
    if length(text) <= limit:
        return [text]
    if level == len(_RECUT):
        return _cut_anywhere(text, length, limit)
    return [piece for part in _RECUT[level].split(text) if part
            for piece in _pieces(part, length, limit, level + 1)]


def _cut_anywhere(text: str, length, limit: int) -> list[str]:
    """Cut between atoms (characters, markers, tags) into pieces of at most limit."""
    return pack(atoms(text), length, limit)


def pack(parts, length: Callable[[str], int], limit: int) -> list[str]:
    """`parts` joined in order into pieces of at most `limit` (by `length`), greedily; a part
    longer than that is a piece of its own."""
    pieces, current = [], ""
    for part in parts:
        if current and length(current + part) > limit:
            pieces.append(current)
            current = ""
        current += part
    if current:
        pieces.append(current)
    return pieces
