"""The browser app: a Gradio page that talks only to the worker client (see webui/app.py)."""

from .app import build_ui

__all__ = ["build_ui"]
