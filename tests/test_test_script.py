"""scripts/test.sh reports the suite's own outcome: "no tests collected" is a failure, not a pass.
Run in a scratch tree with the real script, a bootstrap that does nothing and this interpreter."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "test.sh", tmp_path / "scripts" / "test.sh")
    (tmp_path / "scripts" / "bootstrap.sh").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for script in ("scripts/bootstrap.sh", ".venv/bin/python"):
        os.chmod(tmp_path / script, 0o755)
    (tmp_path / "test_sample.py").write_text("def test_passes():\n    pass\n\ndef test_fails():\n    assert False\n")
    return tmp_path


def run(tree, *args) -> int:
    return subprocess.run(["bash", "scripts/test.sh", "-p", "no:cacheprovider", *args], cwd=tree,
                          capture_output=True, text=True).returncode


def test_the_exit_status_is_the_suites(tree):
    assert run(tree, "-k", "passes") == 0
    assert run(tree, "-k", "fails") == 1
    assert run(tree, "-k", "no_test_has_this_name") == 5
