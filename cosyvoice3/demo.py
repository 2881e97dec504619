"""`python -m cosyvoice3.demo DIR [--full-size]`: the demo checkpoint's command (tools/demo.py)."""

from cosyvoice3.tools.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
