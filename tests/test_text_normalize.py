"""Text normalisation: wetext + the official front end's own steps, tags, wetext failures, lazy imports.

The golden cases (tests/golden/text_normalize.json, made by the official code) are checked by the
golden checker (tests/test_golden.py); these tests pin the rules one by one.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from cosyvoice3.errors import ModelLoadError
from cosyvoice3.frontend.text_normalize import TextNormalizer, detect_language

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def normalizer():
    return TextNormalizer().load()


@pytest.mark.parametrize("text, expected", [
    # wetext zh reads the numbers; the front end's own replacements follow, in the official order
    ("售价￥8,999元，面积120m²，比分2:1", "售价￥八千九百九十九元，面积一百二十平方米，比分二比一"),
    ("你好 世界 hello world", "你好世界hello world"),  # a blank stays only between two ASCII characters
    ("面积m²，体积m³", "面积m平方，体积m立方"),  # no digit: wetext leaves it, the front end reads ²/³
    ("他来了.然后 - 走了", "他来了。然后-走了"),  # blanks go before " - " is looked for
    ("A - B你好", "A，B你好"),
    ("（注意）【重要】好——的，、", "注意重要好 的。"),  # brackets dropped, —— -> blank, trailing commas -> 。
    ("第一行\n第二行", "第一行第二行"),
])
def test_chinese(normalizer, text, expected):
    assert normalizer.normalize(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("10kg after 6pm, $2.4 million", "ten kilograms after six PM, two point four million dollars"),
    ("I have ２ cats.", "I have two cats."),  # wetext leaves full-width digits; inflect spells them out
    ("  padded 5  ", "padded five"),
    ("2026", "两千零二十六"),  # digits only: wetext itself picks its zh grammar, as in the official code
])
def test_other_text(normalizer, text, expected):
    assert normalizer.normalize(text) == expected


def test_a_digit_run_inflect_refuses_is_read_digit_by_digit(normalizer):
    assert normalizer.normalize("No " + "２" * 70) == "No " + " ".join(["two"] * 70)


def test_markup_is_returned_as_given(normalizer):
    marked = " You are a helpful assistant.<|endofprompt|>[breath]因为他们那一辈人123。 "
    assert normalizer.normalize(marked) == marked


def test_tags_are_kept_as_written(normalizer):
    # wetext alone finds no reading of the first text (it fails on the digit of a phone tag)
    assert normalizer.normalize("I [M][AY1][N] 3 cats") == "I [M][AY1][N] three cats"
    assert normalizer.normalize("他笑了[laughter]3次[breath]。") == "他笑了[laughter]三次[breath]。"
    # between tags the text is read with the grammar of the whole text, not wetext's digits-only zh
    assert normalizer.normalize("[breath]2026[breath]") == "[breath]twenty twenty six[breath]"


@pytest.mark.parametrize("text, expected", [
    ("Hello  world, I have  3 cats.", "Hello world, I have three cats."),  # two blanks: read with one
    ("and 5€ or 5 EUR.", "and five€ or five EUR."),  # no reading of "5€": its number read alone
    ("Invoice #4521 is due in 30 days.", "Invoice #four thousand five hundred and twenty one is due in thirty days."),
])
def test_texts_wetext_cannot_read_still_get_a_reading(normalizer, text, expected):
    assert normalizer.normalize(text) == expected


def test_blank_text():
    assert TextNormalizer().normalize("  \n ") == ""


def test_detect_language():
    assert detect_language("Hello 世界") == "zh"
    assert detect_language("Hello world") == "en"
    assert detect_language("こんにちは") == "en"  # kana only: no CJK ideograph


def test_missing_wetext_is_a_load_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "wetext", None)  # makes `import wetext` fail
    with pytest.raises(ModelLoadError, match="wetext"):
        TextNormalizer().load()


def test_imports_are_deferred_until_needed():
    code = (
        "import sys\n"
        "from cosyvoice3.frontend.text import prepare_segments\n"
        "from cosyvoice3.frontend.text_normalize import TextNormalizer\n"
        "n = TextNormalizer()\n"
        "assert not {'torch', 'wetext', 'inflect'} & set(sys.modules), sys.modules.keys()\n"
        "assert n.normalize('I have 3 cats.') == 'I have three cats.'\n"
        "assert 'wetext' in sys.modules and 'inflect' not in sys.modules\n"  # wetext read every digit
        "assert n.normalize('I have ２ cats.') == 'I have two cats.'\n"
        "assert 'inflect' in sys.modules and 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_inflect_can_be_imported_ahead_on_a_thread_of_its_own():
    from cosyvoice3.frontend.text_normalize import TextNormalizer

    normalizer = TextNormalizer().load()
    normalizer.import_inflect_in_background().join(120)
    assert normalizer._inflect is not None  # the first English digit run reads without the import
