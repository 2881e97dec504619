"""The browser suite without a browser: skipped on a developer's machine, a failure when CI is set
(a real pytest run of tests/browser with $COSYFAST_CHROMIUM pointing nowhere)."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def run_browser_suite(tmp_path, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "CI"}
    environment.update(COSYFAST_CHROMIUM=str(tmp_path / "no-chromium"), GRADIO_ANALYTICS_ENABLED="False", **env)
    return subprocess.run([sys.executable, "-m", "pytest", "tests/browser", "-k", "labels", "-p", "no:cacheprovider",
                           "-q", "-rs"], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("ci", [False, True])
def test_a_missing_browser_skips_locally_and_fails_in_ci(tmp_path, ci):
    done = run_browser_suite(tmp_path, **({"CI": "true"} if ci else {}))
    if ci:
        assert done.returncode == 1, done.stdout
        assert "CI is set: the browser tests must run" in done.stdout and "passed" not in done.stdout
    else:
        assert done.returncode == 0, done.stdout
        assert "skipped" in done.stdout and "Chromium" in done.stdout
