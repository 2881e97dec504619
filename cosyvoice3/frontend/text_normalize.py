"""Text normalisation the way the official CosyVoice3 front end does it (reference section 2.2).

`TextNormalizer.normalize(text)` returns what the official `CosyVoiceFrontEnd.text_normalize(text,
split=False)` returns with its `wetext` front end, which is the text the model was trained on:
- a text with both `<|` and `|>` (markup such as `<|endofprompt|>`) is returned as given;
- otherwise the stripped text is read by `wetext` 0.1.8 (text normalisation FSTs shipped in the
  wheel): its zh grammar (`remove_erhua=False`) when the text has a CJK ideograph
  (U+4E00..U+9FFF), its en grammar otherwise (wetext itself picks zh for a text of digits only);
- zh text then gets the official replacements (`_apply_zh_rules`); other text gets every digit
  run that wetext left spelled out by `inflect` (`number_to_words`, default arguments).

Our own additions, where the official front end has nothing (each one is marked in the code):
- special-token tags (`[laughter]`, `[breath]`, phones such as `[AY1]`, `<strong>`) are kept as
  written: the text between them is normalised piece by piece (wetext would read the digit of
  `[AY1]`, or find no reading at all);
- where wetext finds no reading (it raises, e.g. on two blanks in a row in English, on `5€` or
  `#1`), the text is read again with single blanks, then sentence by sentence, then word by word;
  of a word it still cannot read only the numbers are read, the rest stays as written (the
  official front end fails the request there).

`wetext` loads all its grammars when imported (0.5-1 s of CPU) and `inflect` takes 1-4 s of CPU
to import (typeguard instruments its functions, jaraco/inflect#212), so both are imported on
first use: `load()` imports wetext (`pipeline.load_parts` calls it while the model loads), inflect
is imported the first time a digit is left after wetext, which is rare, or ahead of that on a
thread of its own (`import_inflect_in_background`: the GPU worker does it at boot). Torch-free.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading

from cosyvoice3.errors import ModelLoadError
from cosyvoice3.frontend.text_markup import has_markup, tag_pattern

log = logging.getLogger(__name__)

_CJK = re.compile(r"[\u4e00-\u9fff]")


def detect_language(text: str) -> str:
    """"zh" when the text has a CJK ideograph (U+4E00..U+9FFF), else "en" (the official rule)."""
    return "zh" if _CJK.search(text) else "en"


def _apply_zh_rules(text: str) -> str:
    """The official front end's own replacements after wetext, for Chinese text, in its order."""
    text = text.replace("\n", "")
    text = _drop_blanks(text)
    text = text.replace("²", "平方").replace("³", "立方")
    text = text.replace(".", "。").replace(" - ", "，")
    for mark in ("（", "）", "【", "】", "`"):
        text = text.replace(mark, "")
    text = text.replace("——", " ")
    return re.sub(r"[，,、]+$", "。", text)


def _drop_blanks(text: str) -> str:
    """Keep a blank (U+0020) only between two ASCII characters that are not blanks."""
    def kept(i: int) -> bool:
        before, after = text[i - 1] if i > 0 else " ", text[i + 1] if i + 1 < len(text) else " "
        return before.isascii() and before != " " and after.isascii() and after != " "

    return "".join(c for i, c in enumerate(text) if c != " " or kept(i))


def _keep_blanks(piece: str, read) -> str:
    """read(piece without its surrounding whitespace), with that whitespace put back."""
    core = piece.strip()
    if not core:
        return piece
    start = len(piece) - len(piece.lstrip())
    return piece[:start] + read(core) + piece[start + len(core):]


# Our own retries where wetext finds no reading of a text (the official front end raises): the
# text with single blanks, then its sentences, then its words; each returns the pieces to read.
# Of a word that still has no reading only the numbers are read, the rest stays as written.
_RETRIES = (
    lambda text: [re.sub(r"\s+", " ", text)],
    lambda text: [p for p in re.split(r"(?<=[.!?;:。！？；：])", text) if p],
    lambda text: [p for p in re.split(r"(?<=\s)(?=\S)", text) if p],
)
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")


class TextNormalizer:
    """wetext (zh and en) + inflect, each imported on first use (the loading is thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._wetext: dict | None = None  # "zh"/"en" -> wetext.Normalizer
        self._inflect = None

    def load(self) -> "TextNormalizer":
        """Import wetext and build its two normalisers (as the official front end does)."""
        with self._lock:
            if self._wetext is None:
                try:
                    import wetext
                except ImportError as e:
                    raise ModelLoadError(f"text normalisation needs wetext ({e}); "
                                         "install it with pip install -r requirements.txt") from e
                self._wetext = {"zh": wetext.Normalizer(remove_erhua=False), "en": wetext.Normalizer()}
        return self

    def normalize(self, text: str, lang: str | None = None) -> str:
        """The official `text_normalize(text, split=False)` (module docstring). `lang`: the
        language of the text this one is a part of (`detect_language` of the whole; our own, for
        a long text read in blocks: `text.SegmentPlan`); None: this text's own."""
        if has_markup(text):
            return text
        text = text.strip()
        if not text:
            return ""
        whole, lang = lang is None, lang or detect_language(text)
        pieces = tag_pattern().split(text)
        if len(pieces) == 1:
            spoken = self._read(text, lang, whole=whole)
        else:  # our own: tags (odd positions) stay as written, the text between them is read
            spoken = "".join(piece if i % 2 else _keep_blanks(piece, lambda core: self._read(core, lang))
                             for i, piece in enumerate(pieces))
        return _apply_zh_rules(spoken) if lang == "zh" else spoken

    def _read(self, text: str, lang: str, whole: bool = False) -> str:
        spoken = self._tn(text, lang, whole)
        return spoken if lang == "zh" else self._spell_out_digits(spoken)

    def _tn(self, text: str, lang: str, whole: bool, retry: int = 0) -> str:
        """wetext TN of a stripped text. The whole text goes in as the official front end gives it
        (wetext picks the grammar); a piece of it is read with the grammar of the whole text."""
        spoken = self._wetext_reading(text, lang, whole)
        if spoken is not None:
            return spoken
        if retry == len(_RETRIES):
            log.info("wetext has no reading of %r; only its numbers are read", text)
            return _NUMBER.sub(lambda m: self._wetext_reading(m.group(), lang) or m.group(), text)
        return "".join(_keep_blanks(piece, lambda core: self._tn(core, lang, False, retry + 1))
                       for piece in _RETRIES[retry](text))

    def _wetext_reading(self, text: str, lang: str, whole: bool = False) -> str | None:
        """wetext's reading of a stripped text, None where it has none."""
        normalizer = self.load()._wetext[lang]
        try:
            spoken = normalizer.normalize(text) if whole else normalizer.normalize(text, lang=lang)
        except Exception:  # wetext raises where its grammar has no path for the text
            return None
        return spoken if spoken or not text else None

    def _spell_out_digits(self, text: str) -> str:
        """Every run of characters with str.isdigit() -> inflect's number_to_words (the official
        `spell_out_number`)."""
        runs = [("".join(group), is_digit) for is_digit, group in itertools.groupby(text, key=str.isdigit)]
        if not any(is_digit for _, is_digit in runs):
            return text
        engine = self._number_words()
        return "".join(self._number_to_words(engine, run) if is_digit else run for run, is_digit in runs)

    @staticmethod
    def _number_to_words(engine, digits: str) -> str:
        try:
            return engine.number_to_words(digits)
        except Exception as error:  # our own: inflect refuses some digit runs; say them one by one
            log.info("inflect cannot read %r (%s); read digit by digit", digits, error)
            return " ".join(engine.number_to_words(d) for d in digits)

    def import_inflect_in_background(self) -> threading.Thread:
        """Import inflect on a thread of its own now, so the first text with a digit left after
        wetext does not stall the model loop for the import (the serving worker calls this; a
        normalisation that needs inflect meanwhile waits for the same import)."""
        thread = threading.Thread(target=self._number_words, name="inflect-import", daemon=True)
        thread.start()
        return thread

    def _number_words(self):
        with self._lock:
            if self._inflect is None:
                import inflect

                self._inflect = inflect.engine()
            return self._inflect
