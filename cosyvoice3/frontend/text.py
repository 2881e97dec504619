"""The text front end of one request: normalise, split, drop what is not speech (torch-free).

`prepare_segments(text, tokenizer, normalizer)` is the official `text_normalize(text, split=True)`
(reference section 2.2) with our guarantees: the language is detected once on the stripped text
(`text_normalize.detect_language`), the text is normalised (`text_normalize.TextNormalizer`) and
cut into bounded segments (`text_split.split_segments`), and segments made only of punctuation,
symbols and blanks are dropped. A text with `<|...|>` markup, or one the caller asks to keep as
written (normalize=False, the official `text_frontend=False`), is spoken as written: in one
segment, as in the official code, unless it is longer than the segment bound (then split, never
inside a marker or tag). Nothing left to speak is an `EmptyTextError`.
"""

from __future__ import annotations

import unicodedata

from cosyvoice3.errors import EmptyTextError
from cosyvoice3.frontend.text_markup import has_markup
from cosyvoice3.frontend.text_normalize import TextNormalizer, detect_language
from cosyvoice3.frontend.text_split import Encoder, segment_bound, split_segments


def is_only_punctuation(text: str) -> bool:
    """True for text made only of punctuation, symbols and blanks (or empty)."""
    return all(unicodedata.category(c)[0] in "PS" or c.isspace() for c in text)


def prepare_segments(text: str, tokenizer: Encoder, normalizer: TextNormalizer, normalize: bool = True) -> list[str]:
    """The segments to synthesise, in order; tokenizer measures en lengths (encode(text) -> ids)."""
    if not text.strip():
        raise EmptyTextError("the text is empty")
    lang = detect_language(text)
    if has_markup(text) or not normalize:
        length = len(text) if lang == "zh" else len(tokenizer.encode(text))
        segments = [text] if length <= segment_bound() else split_segments(text.strip(), tokenizer, lang)
    else:
        segments = split_segments(normalizer.normalize(text), tokenizer, lang)
    segments = [s for s in segments if not is_only_punctuation(s)]
    if not segments:
        raise EmptyTextError("the text has nothing to speak (only punctuation or symbols)")
    return segments
