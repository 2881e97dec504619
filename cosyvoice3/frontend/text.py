"""The text front end of one request: normalise, split, drop what is not speech (torch-free).

`prepare_segments(text, tokenizer, normalizer)` is the official `text_normalize(text, split=True)`
(reference section 2.2) with our guarantees: the language is detected once on the stripped text
(`text_normalize.detect_language`), the text is normalised (`text_normalize.TextNormalizer`) and
cut into bounded segments (`text_split.split_segments`), and segments made only of punctuation,
symbols and blanks are dropped. A text with `<|...|>` markup, or one the caller asks to keep as
written (normalize=False, the official `text_frontend=False`), is spoken as written: in one
segment, as in the official code, unless it is longer than the segment bound (then split, never
inside a marker or tag). Nothing left to speak is an `EmptyTextError`.

Our own, for long texts: wetext's time grows faster than the text (50,000 characters take 12-21 s
in one call on a 2-core machine, holding the interpreter all along), so a text longer than
`WHOLE_TEXT_CHARS` that is to be normalised is read in blocks of whole sentences (about
`BLOCK_CHARS` each, cut only after a sentence end or a line break; a longer sentence is one block),
each with the language of the whole text, and split block by block: the same readings, a segment
never spans two blocks. `SegmentPlan` does this one block per `step()`, so the worker plans a
chapter between its rounds (worker/gpu/scheduler.py) while other requests go on; `prepare_segments`
is the plan run to its end. Shorter texts go in whole, exactly as the official front end reads them.
"""

from __future__ import annotations

import re
import unicodedata

from cosyvoice3.errors import EmptyTextError
from cosyvoice3.frontend.text_markup import has_markup
from cosyvoice3.frontend.text_normalize import TextNormalizer, detect_language
from cosyvoice3.frontend.text_split import Encoder, pack, segment_bound, split_segments


def is_only_punctuation(text: str) -> bool:
    """True for text made only of punctuation, symbols and blanks (or empty)."""
    return all(unicodedata.category(c)[0] in "PS" or c.isspace() for c in text)


WHOLE_TEXT_CHARS = 1000  # longer texts to normalise are read in blocks of sentences
BLOCK_CHARS = 200  # a block's length when sentences are short enough (one sentence at least)
# Where a long text may be cut into blocks: after a sentence end of either language (a Latin one
# only before a blank, so "3.5" or "e.g." in a word stays whole) or a line break.
_BLOCK_CUT = re.compile(r"(?<=[。？！；!?\n])|(?<=[.;:])(?=\s)")


def text_blocks(text: str, size: int = BLOCK_CHARS) -> list[str]:
    """`text` cut after sentence ends into blocks of whole sentences, each about `size` characters
    (a sentence longer than that is a block of its own); joined, they give the text back."""
    return pack(_BLOCK_CUT.split(text), len, size)


class SegmentPlan:
    """The segments of one text, planned a block at a time (module docstring): `step()` reads the
    next block, `done` once every block is read, `finish()` reads what is left and returns the
    segments (EmptyTextError when nothing is left to speak). An empty text fails at once."""

    def __init__(self, text: str, tokenizer: Encoder, normalizer: TextNormalizer, normalize: bool = True):
        if not text.strip():
            raise EmptyTextError("the text is empty")
        self.tokenizer, self.normalizer = tokenizer, normalizer
        self.lang = detect_language(text)
        self.normalize = normalize and not has_markup(text)
        long = self.normalize and len(text) > WHOLE_TEXT_CHARS
        self._blocks = text_blocks(text) if long else [text]
        self._block_lang = self.lang if long else None  # None: the whole text, wetext picks (official)
        self._next = 0
        self._segments: list[str] = []

    @property
    def done(self) -> bool:
        return self._next == len(self._blocks)

    @property
    def progress(self) -> tuple[int, int]:
        """(blocks read, blocks in all)."""
        return self._next, len(self._blocks)

    def step(self) -> None:
        """Read the next block into segments."""
        block = self._blocks[self._next]
        self._next += 1
        if not self.normalize:
            length = len(block) if self.lang == "zh" else len(self.tokenizer.encode(block))
            found = [block] if length <= segment_bound() else split_segments(block.strip(), self.tokenizer, self.lang)
        else:
            spoken = self.normalizer.normalize(block, self._block_lang)
            found = split_segments(spoken, self.tokenizer, self.lang)
        self._segments.extend(s for s in found if not is_only_punctuation(s))

    def finish(self) -> list[str]:
        while not self.done:
            self.step()
        if not self._segments:
            raise EmptyTextError("the text has nothing to speak (only punctuation or symbols)")
        return list(self._segments)


def prepare_segments(text: str, tokenizer: Encoder, normalizer: TextNormalizer, normalize: bool = True) -> list[str]:
    """The segments to synthesise, in order; tokenizer measures en lengths (encode(text) -> ids)."""
    return SegmentPlan(text, tokenizer, normalizer, normalize).finish()
