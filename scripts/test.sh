#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite. Arguments go to pytest.
# GPU tests run only where CUDA is available; browser tests use Debian's chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --dev
export GRADIO_ANALYTICS_ENABLED=False PYTHONUNBUFFERED=1
# pytest's exit status is the suite's: 5 ("no tests collected", a typo in -k or a path) fails too.
exec .venv/bin/python -m pytest "$@"
