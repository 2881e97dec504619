#!/usr/bin/env bash
# Set up (first run only) and start cosyfast on http://127.0.0.1:7860.
# Arguments go to app.py (see `scripts/start.sh --help`), e.g. --demo, --model-dir DIR, --port N.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python app.py "$@"
