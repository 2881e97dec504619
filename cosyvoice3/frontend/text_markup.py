"""What in a text is markup rather than words (torch-free).

- `<|...|>` markers such as `<|endofprompt|>`: the official front end neither normalises nor
  splits a text that has both `<|` and `|>` (`has_markup`);
- special-token tags (`[laughter]`, `[breath]`, phones such as `[AY1]`, `<strong>`), the
  CosyVoice3 special tokens that are not `<|...|>` markers: text normalisation keeps them as
  written and splitting never cuts inside one (`tag_pattern`, `atoms`).
"""

from __future__ import annotations

import re
from functools import lru_cache

from cosyvoice3.frontend.tokenizer import special_tokens

_MARKER = r"<\|[^|<>\s]*\|>"


def has_markup(text: str) -> bool:
    """The official front end's test: both `<|` and `|>` somewhere in the text."""
    return "<|" in text and "|>" in text


@lru_cache(maxsize=None)
def tag_pattern() -> re.Pattern:
    """The special-token tags as one capturing group, longest first (so `re.split` keeps them)."""
    tags = sorted((t for t in special_tokens() if not t.startswith("<|")), key=len, reverse=True)
    return re.compile("(" + "|".join(map(re.escape, tags)) + ")")


@lru_cache(maxsize=None)
def _atom_pattern() -> re.Pattern:
    return re.compile(_MARKER + "|" + tag_pattern().pattern[1:-1] + "|.", re.DOTALL)


def atoms(text: str) -> list[str]:
    """The text as units that must stay whole: markers, tags, and single characters."""
    return _atom_pattern().findall(text)
