"""Text tokenizer: golden cases of the official tokenizer, special ids, the demo tokenizer."""

import json
from pathlib import Path

import pytest

from cosyvoice3.frontend.tokenizer import TextTokenizer, special_tokens, write_demo_tokenizer

GOLDEN = Path(__file__).resolve().parent / "golden"
QWEN_DIR = GOLDEN / "model" / "CosyVoice-BlankEN"


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer.from_dir(QWEN_DIR)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return write_demo_tokenizer(tmp_path_factory.mktemp("demo"))


def test_golden_cases_exact(tokenizer):
    cases = json.loads((GOLDEN / "tokenizer_cases.json").read_text(encoding="utf-8"))
    assert len(cases) >= 7
    for case in cases:
        assert tokenizer.encode(case["text"]) == case["ids"], case["text"]


def test_special_token_ids(tokenizer):
    tokens = special_tokens()
    # eos/pad (<|endoftext|>) + the 280 additional tokens, 2 of which Qwen2 already has
    assert len(tokens) == 281 and tokens[:3] == ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
    expected = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|endofprompt|>": 151646,
                "[breath]": 151647, "<strong>": 151648, "[mn]": 151662, "<|endofsystem|>": 151663,
                "[AA]": 151664, "[ZH]": 151747, "[a]": 151748, "[ǜ]": 151923}
    assert {t: tokenizer.token_to_id(t) for t in expected} == expected
    assert tokenizer.endofprompt_id == 151646 and tokenizer.vocab_size == 151924
    assert tokenizer.encode("[AA1][a]<|endofsystem|>") == [151666, 151748, 151663]


def test_decode_skips_special_tokens_by_default(tokenizer):
    ids = tokenizer.encode("You are a helpful assistant.<|endofprompt|>[breath]Hello world.")
    assert tokenizer.decode(ids) == "You are a helpful assistant.Hello world."
    assert tokenizer.decode(ids, skip_special_tokens=False) == \
        "You are a helpful assistant.<|endofprompt|>[breath]Hello world."


def test_missing_files_are_reported(tmp_path):
    from cosyvoice3.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="merges.txt"):
        TextTokenizer.from_dir(tmp_path)


def test_demo_tokenizer_is_deterministic(demo_dir, tmp_path):
    again = write_demo_tokenizer(tmp_path / "again")
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (demo_dir / name).read_bytes() == (again / name).read_bytes(), name


def test_demo_tokenizer_layout_and_ids(demo_dir):
    vocab = json.loads((demo_dir / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 151643 and sorted(vocab.values()) == list(range(151643))
    assert vocab["Ġ"] == 220 and vocab["!"] == 0 and vocab["<unused151642>"] == 151642
    merges = (demo_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0] == "#version: 0.2" and len(merges) == 257
    demo = TextTokenizer.from_dir(demo_dir)
    assert demo.endofprompt_id == 151646 and demo.token_to_id("[ǜ]") == 151923


@pytest.mark.parametrize("text", ["Hello, world! 你好，世界。", "🎉 emoji, مرحبا, Привет, こんにちは, 한국어",
                                  "tabs\tand\nnewlines  and   spaces", "<unused300> is not a token"])
def test_demo_tokenizer_covers_any_utf8(demo_dir, text):
    demo = TextTokenizer.from_dir(demo_dir)
    ids = demo.encode(text)
    assert ids and max(ids) < 512  # byte tokens and learned merges only
    assert demo.decode(ids) == text


def test_demo_tokenizer_merges_shorten_common_text(demo_dir):
    demo = TextTokenizer.from_dir(demo_dir)
    text = "You are a helpful assistant. 希望你以后能够做的比我还好呦。"
    assert len(demo.encode(text)) < len(text.encode("utf-8")) / 2
