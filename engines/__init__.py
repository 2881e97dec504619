"""Engines for the heavy modules of cosyvoice3/: TensorRT, ONNX Runtime and PyTorch runners behind
one interface, ONNX export, an on-disk engine cache, and `auto` selection with a reason for every
fallback. Importing the package is cheap (no torch import); the names below load on first use.

    model = engines.load_model(model_dir, device="cuda", dtype=torch.bfloat16, backend="auto")
    dtype = engines.model_dtype("auto", "cuda")   # the weights' dtype for a --dtype value
    backends = engines.build_backends(parts, engines.EngineConfig(...), progress=fn)  # for CosyVoice3(parts, backends)
    runners, report = engines.build_runners(parts, engines.EngineConfig(...), progress=fn)
"""

__all__ = ["build_backends", "build_runners", "EngineConfig", "load_model", "model_dtype"]


def __getattr__(name):
    if name in ("load_model", "model_dtype"):
        from . import loading

        return getattr(loading, name)
    if name in __all__:
        from . import selection

        return getattr(selection, name)
    raise AttributeError(name)
