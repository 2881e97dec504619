"""Engines for the heavy modules of cosyvoice3/: TensorRT, ONNX Runtime and PyTorch runners behind
one interface, ONNX export, an on-disk engine cache, and `auto` selection with a reason for every
fallback. Importing the package is cheap (no torch import); the names below load on first use.

    model = engines.load_model(model_dir, device="cuda", dtype=torch.bfloat16, backend="auto")
    backends = engines.build_backends(parts, engines.EngineConfig(...), progress=fn)  # for CosyVoice3(parts, backends)
    runners, report = engines.build_runners(parts, engines.EngineConfig(...), progress=fn)
"""

__all__ = ["build_backends", "build_runners", "EngineConfig", "load_model"]


def __getattr__(name):
    if name == "load_model":
        from .loading import load_model

        return load_model
    if name in __all__:
        from . import selection

        return getattr(selection, name)
    raise AttributeError(name)
