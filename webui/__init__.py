"""The browser app: a Gradio page that talks only to the worker client (see webui/app.py).

`build_ui` is imported on first use, so the page's parts that need no Gradio (the voice library,
the stream hub, access rules) load without it.
"""

__all__ = ["build_ui"]


def __getattr__(name):
    if name == "build_ui":
        from .app import build_ui

        return build_ui
    raise AttributeError(name)
