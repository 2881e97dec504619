"""Text tokenizer of CosyVoice3: Qwen2 byte-level BPE plus the CosyVoice3 special tokens.

Built with the `tokenizers` library from the model's Qwen2 folder (`vocab.json`, `merges.txt`,
`tokenizer_config.json`), the way Hugging Face converts a Qwen2 tokenizer: NFC normalisation,
the Qwen2 pre-tokenisation regex, byte-level mapping, BPE. The added tokens of
`tokenizer_config.json` keep their declared ids; the CosyVoice3 special tokens
(`data/special_tokens.json`, the official order) are appended after them, which puts
`<|endofprompt|>` at 151646. Special tokens inside a text are matched as single ids.

`write_demo_tokenizer` writes a small, deterministic tokenizer folder in the same format for
the demo checkpoint.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import lru_cache
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from cosyvoice3.errors import ModelLoadError

DATA_DIR = Path(__file__).parent / "data"
QWEN2_PRETOKENIZE_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_BASE_VOCAB = 151643  # BPE ids of Qwen2; <|endoftext|> is the first added token
ENDOFPROMPT = "<|endofprompt|>"


@lru_cache(maxsize=None)
def special_tokens() -> tuple[str, ...]:
    """The CosyVoice3 special tokens in the order they are added (eos/pad first)."""
    data = json.loads((DATA_DIR / "special_tokens.json").read_text(encoding="utf-8"))
    ordered = [data["eos_token"], data["pad_token"], *data["additional_special_tokens"]]
    return tuple(dict.fromkeys(ordered))


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters, in vocabulary order:
    printable Latin-1 bytes map to themselves, the others to U+0100 onwards."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return dict(sorted(mapping.items(), key=lambda kv: (kv[0] not in printable, kv[0])))


def _qwen2_pre_tokenizer():
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


class TextTokenizer:
    """encode(text) -> ids, decode(ids) -> text, for the CosyVoice3 LLM."""

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self.endofprompt_id = tokenizer.token_to_id(ENDOFPROMPT)

    @classmethod
    def from_dir(cls, qwen_dir: str | Path) -> "TextTokenizer":
        """Load a Qwen2 tokenizer folder (`vocab.json`, `merges.txt`, `tokenizer_config.json`)."""
        qwen_dir = Path(qwen_dir)
        paths = {name: qwen_dir / name for name in ("vocab.json", "merges.txt", "tokenizer_config.json")}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise ModelLoadError(f"tokenizer files missing: {', '.join(missing)}")
        try:
            vocab = json.loads(paths["vocab.json"].read_text(encoding="utf-8"))
            config = json.loads(paths["tokenizer_config.json"].read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ModelLoadError(f"{qwen_dir}: invalid tokenizer JSON: {e}") from e
        merges = []
        for i, line in enumerate(paths["merges.txt"].read_text(encoding="utf-8").splitlines()):
            if (i == 0 and line.startswith("#version")) or not line.strip():
                continue
            merges.append(tuple(line.split()))

        tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False,
                                         byte_fallback=False))
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = _qwen2_pre_tokenizer()
        tokenizer.decoder = decoders.ByteLevel()

        declared = sorted(config.get("added_tokens_decoder", {}).items(), key=lambda kv: int(kv[0]))
        for token_id, spec in declared:
            tokenizer.add_special_tokens([AddedToken(
                spec["content"], single_word=spec.get("single_word", False), lstrip=spec.get("lstrip", False),
                rstrip=spec.get("rstrip", False), normalized=spec.get("normalized", False),
                special=spec.get("special", True))])
            if tokenizer.token_to_id(spec["content"]) != int(token_id):
                raise ModelLoadError(f"{paths['tokenizer_config.json']}: added token {spec['content']!r} would get id "
                                     f"{tokenizer.token_to_id(spec['content'])}, the file declares {token_id}")
        tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in special_tokens()])
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        """Number of ids in use (BPE vocabulary + added tokens)."""
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


# ------------------------------------------------------------------------------ demo tokenizer

_DEMO_CORPUS = """\
The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore.
Hello, world! How are you today? I am fine, thank you, and you? This is a demo of a voice clone.
Please read the text aloud in a clear and natural voice, with the right pauses and the right tone.
Numbers like 0 1 2 3 4 5 6 7 8 9 are read one digit at a time; one two three four five six seven eight nine ten.
我们今天一起去公园散步吧。希望你以后能够做的比我还好呦。这是一个语音合成的演示。
你好，世界！今天天气很好，我们出去走走吧。请用清楚自然的声音朗读这段文字。
"""


def _demo_corpus() -> str:
    presets = json.loads((DATA_DIR / "instructions.json").read_text(encoding="utf-8"))["presets"]
    lines = [p["instruction"].replace(ENDOFPROMPT, "") for p in presets]
    return _DEMO_CORPUS + "\n".join(lines)


def _learn_merges(words: Counter, n_merges: int) -> list[tuple[str, str]]:
    """Plain BPE training: repeatedly merge the most frequent adjacent pair (ties: smallest pair)."""
    splits = {word: tuple(word) for word in words}
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: Counter = Counter()
        for word, parts in splits.items():
            for pair in zip(parts, parts[1:]):
                pairs[pair] += words[word]
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        for word, parts in splits.items():
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            splits[word] = tuple(merged)
    return merges


def write_demo_tokenizer(out_dir: str | Path, n_merges: int = 256) -> Path:
    """Write a small Qwen2-format tokenizer folder (`vocab.json`, `merges.txt`,
    `tokenizer_config.json`) into out_dir and return it.

    256 byte tokens (so any UTF-8 text is covered) plus `n_merges` merges learned from a
    built-in zh/en corpus; `vocab.json` is padded with inert `<unusedN>` entries up to 151643
    so the added and special tokens keep their real ids. The bytes written are the same on
    every run.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = normalizers.NFC().normalize_str(_demo_corpus())
    words = Counter(piece for piece, _ in _qwen2_pre_tokenizer().pre_tokenize_str(corpus))
    merges = _learn_merges(words, n_merges)

    vocab = {char: i for i, char in enumerate(bytes_to_unicode().values())}
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    for i in range(len(vocab), QWEN2_BASE_VOCAB):
        vocab[f"<unused{i}>"] = i

    names = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
    config = {
        "add_bos_token": False, "add_prefix_space": False,
        "added_tokens_decoder": {str(QWEN2_BASE_VOCAB + i): {
            "content": name, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": True} for i, name in enumerate(names)},
        "additional_special_tokens": list(names[1:]), "bos_token": None, "clean_up_tokenization_spaces": False,
        "eos_token": names[0], "errors": "replace", "model_max_length": 32768, "pad_token": names[0],
        "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer", "unk_token": None,
    }
    _write_text(out_dir / "vocab.json", json.dumps(vocab, ensure_ascii=False, separators=(",", ":")))
    _write_text(out_dir / "merges.txt", "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    _write_text(out_dir / "tokenizer_config.json", json.dumps(config, ensure_ascii=False, indent=2) + "\n")
    return out_dir


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
