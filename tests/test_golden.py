"""`python -m cosyvoice3.tools.golden` on the reference set of the official implementation.

tests/golden/ is a copy of shared/golden (tiny random checkpoint + reference tensors). The checker
must pass on it, and must fail - naming the array - when a reference value is disturbed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"


def run_checker(root: Path, *extra: str) -> tuple[int, list[dict]]:
    proc = subprocess.run([sys.executable, "-m", "cosyvoice3.tools.golden", str(root), *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def test_reference_set_passes_every_stage():
    code, rows = run_checker(GOLDEN)
    assert [r["stage"] for r in rows] == ["tokenizer", "text_normalize", "frontend", "llm", "dit_estimator", "flow",
                                          "hift", "e2e"]
    failed = {r["stage"]: r.get("error") or [k for k, v in r["arrays"].items() if not v["ok"]] for r in rows
              if not r["ok"]}
    assert code == 0 and not failed, failed
    assert all(r["max_abs"] < 1e-3 for r in rows if r["stage"] != "text_normalize")


def test_disturbed_reference_fails_that_array(tmp_path):
    root = tmp_path / "set"
    shutil.copytree(GOLDEN, root, ignore=shutil.ignore_patterns("e2e*", "llm.npz", "frontend.npz", "hift.npz"))
    with np.load(root / "flow.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["mel"] = arrays["mel"] + 1e-3  # ten times the tolerance
    np.savez(root / "flow.npz", **arrays)
    code, rows = run_checker(root)
    assert code == 1
    flow = next(r for r in rows if r["stage"] == "flow")
    assert not flow["ok"] and not flow["arrays"]["mel"]["ok"] and flow["arrays"]["mu"]["ok"]


def test_a_wrong_normalised_text_fails_that_case(tmp_path):
    root = tmp_path / "set"
    shutil.copytree(GOLDEN / "model", root / "model")
    cases = json.loads((GOLDEN / "text_normalize.json").read_text(encoding="utf-8"))
    cases[1]["normalized"] += "!"
    (root / "text_normalize.json").write_text(json.dumps(cases, ensure_ascii=False), encoding="utf-8")
    code, rows = run_checker(root)
    assert code == 1 and [r["stage"] for r in rows] == ["text_normalize"]
    case = rows[0]["arrays"]["case1"]
    assert not rows[0]["ok"] and not case["ok"] and case["got"] + "!" == case["want"]
    assert rows[0]["arrays"]["case0"] == {"ok": True, "got": cases[0]["normalized"], "want": cases[0]["normalized"]}


def test_empty_directory_is_an_error(tmp_path):
    shutil.copytree(GOLDEN / "model", tmp_path / "model")
    code, rows = run_checker(tmp_path)
    assert code == 2 and "no reference files" in rows[0]["error"]
