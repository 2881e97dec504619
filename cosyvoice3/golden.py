"""`python -m cosyvoice3.golden DIR`: the golden checker's command (it lives in tools/golden.py)."""

from cosyvoice3.tools.golden import main

if __name__ == "__main__":
    raise SystemExit(main())
