"""Engines for the heavy modules of cosyvoice3/: TensorRT, ONNX Runtime and PyTorch runners behind
one interface, ONNX export, an on-disk engine cache, and `auto` selection with a reason for every
fallback. Importing the package is cheap (no torch import); the names below load on first use.

    report = engines.attach_engines(model, backend="auto", precision=None, progress=fn)
    runners, report = engines.build_runners(model, engines.EngineConfig(...), progress=fn)
"""

__all__ = ["attach_engines", "build_runners", "EngineConfig"]


def __getattr__(name):
    if name in __all__:
        from . import selection

        return getattr(selection, name)
    raise AttributeError(name)
