"""Reading a long text into segments (issue 20, long texts): one wetext call over the whole text
against the block-by-block plan the worker runs between its rounds (`cosyvoice3.frontend.text`).

    python bench/text_plan.py [--chars 50000] [--qwen-dir DIR]

Prints one JSON line per language (en, zh): the whole text read in one call (seconds; the
interpreter is held all along, so every other request of the worker waits that long), the plan's
total and its longest step (the longest wait it puts between two rounds), blocks and segments.
Torch-free; the tokenizer is the golden model's (tests/golden/model/CosyVoice-BlankEN) unless
--qwen-dir names another.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cosyvoice3.frontend.text import SegmentPlan  # noqa: E402
from cosyvoice3.frontend.text_normalize import TextNormalizer  # noqa: E402
from cosyvoice3.frontend.tokenizer import TextTokenizer  # noqa: E402

SENTENCES = {"en": "Room {n} opened on {d} May 2025 at 3:30 pm, and the ticket cost $4.50. ",
             "zh": "第{n}章写于2025年5月{d}日下午3点30分，价格是4.5元。"}


def chapter(lang: str, chars: int) -> str:
    text, n = "", 0
    while len(text) < chars:
        text += SENTENCES[lang].format(n=n, d=n % 28 + 1)
        n += 1
    return text[:chars]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chars", type=int, default=50_000)
    parser.add_argument("--qwen-dir", type=Path, default=ROOT / "tests" / "golden" / "model" / "CosyVoice-BlankEN")
    args = parser.parse_args()
    tokenizer, normalizer = TextTokenizer.from_dir(args.qwen_dir), TextNormalizer().load()
    for lang in SENTENCES:
        text = chapter(lang, args.chars)
        start = time.perf_counter()
        normalizer.normalize(text)
        whole = time.perf_counter() - start
        plan, steps = SegmentPlan(text, tokenizer, normalizer), []
        while not plan.done:
            start = time.perf_counter()
            plan.step()
            steps.append(time.perf_counter() - start)
        print(json.dumps({"lang": lang, "chars": len(text), "whole_call_s": round(whole, 3),
                          "plan_total_s": round(sum(steps), 3), "plan_longest_step_s": round(max(steps), 4),
                          "blocks": len(steps), "segments": len(plan.finish())}), flush=True)


if __name__ == "__main__":
    main()
