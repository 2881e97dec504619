"""From CTC logits to text: greedy decoding, the sentencepiece tokenizer and the rich-text tags.

SenseVoice writes its answers to the four task queries as tags at the start of the text:
`<|zh|><|NEUTRAL|><|Speech|><|withitn|>text...` (language, emotion, audio event, text
normalisation). `parse_rich_text` takes every `<|...|>` tag out and sorts the known ones; the
rest is the transcript. The query ids (rows of `embed.weight`) are the reference's:
language auto 0, zh 3, en 4, yue 7, ja 11, ko 12, nospeech 13; then 1 and 2 (event, emotion);
text normalisation with ITN 14 (punctuation, digits), without 15.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from cosyvoice3.errors import BadInputError, ModelLoadError

BLANK_ID = 0
LANGUAGE_QUERIES = {"auto": 0, "zh": 3, "en": 4, "yue": 7, "ja": 11, "ko": 12, "nospeech": 13}
EVENT_QUERY, EMOTION_QUERY = 1, 2
TEXT_NORM_QUERIES = {"withitn": 14, "woitn": 15}
LANGUAGES = ("zh", "en", "yue", "ja", "ko", "nospeech")
EMOTIONS = ("HAPPY", "SAD", "ANGRY", "NEUTRAL", "FEARFUL", "DISGUSTED", "SURPRISED", "EMO_UNKNOWN")
EVENTS = ("Speech", "BGM", "Applause", "Laughter", "Cry", "Sneeze", "Breath", "Cough", "Sing",
          "Speech_Noise", "Event_UNK")
TEXT_NORMS = tuple(TEXT_NORM_QUERIES)
TAGS = LANGUAGES + EMOTIONS + EVENTS + TEXT_NORMS + ("GBG",)
MAX_BPE_BYTES = 16 << 20  # the released model has 377 kB
_TAG = re.compile(r"<\|([^|<>]{1,32})\|>")


def query_ids(language: str = "auto", itn: bool = True) -> list[int]:
    """The four query ids in the order the model reads them: [language, event, emotion, text norm]."""
    if language not in LANGUAGE_QUERIES:
        raise BadInputError(f"unknown recogniser language {language!r}; one of {', '.join(LANGUAGE_QUERIES)}")
    return [LANGUAGE_QUERIES[language], EVENT_QUERY, EMOTION_QUERY, TEXT_NORM_QUERIES["withitn" if itn else "woitn"]]


def ctc_greedy(logits: torch.Tensor, blank: int = BLANK_ID) -> list[int]:
    """Best path of one utterance: argmax per frame, repeats merged, blanks dropped. logits (T, V)."""
    best = logits.argmax(dim=-1)
    return [int(i) for i in torch.unique_consecutive(best).tolist() if i != blank]


@dataclass
class RichText:
    """text: the transcript without tags; language/emotion/event: the first tag of each kind ('' if
    none); raw: the decoded string with its tags."""

    text: str
    language: str
    emotion: str
    event: str
    raw: str


def parse_rich_text(raw: str) -> RichText:
    found = {"language": "", "emotion": "", "event": ""}
    for name in _TAG.findall(raw):
        kind = ("language" if name in LANGUAGES else "emotion" if name in EMOTIONS
                else "event" if name in EVENTS else None)
        if kind and not found[kind]:
            found[kind] = name
    text = re.sub(r"\s+", " ", _TAG.sub(" ", raw)).strip()
    return RichText(text, found["language"], found["emotion"], found["event"], raw)


class Tokenizer:
    """The released sentencepiece BPE model (`chn_jpn_yue_eng_ko_spectok.bpe.model`)."""

    def __init__(self, processor):
        self.processor = processor

    @classmethod
    def from_file(cls, path: str | Path) -> "Tokenizer":
        import sentencepiece as spm

        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"recogniser tokenizer not found: {path}")
        if path.stat().st_size > MAX_BPE_BYTES:
            raise ModelLoadError(f"{path} is {path.stat().st_size} bytes; a tokenizer has at most {MAX_BPE_BYTES}")
        try:
            return cls(spm.SentencePieceProcessor(model_proto=path.read_bytes()))
        except (RuntimeError, OSError) as exc:
            raise ModelLoadError(f"cannot read the recogniser tokenizer {path}: {exc}") from exc

    @property
    def vocab_size(self) -> int:
        return int(self.processor.vocab_size())

    def decode(self, ids: list[int]) -> str:
        return self.processor.decode([i for i in ids if 0 <= i < self.vocab_size])

    def encode(self, text: str) -> list[int]:
        return list(self.processor.encode(text))
