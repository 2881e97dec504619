"""CosyVoice3 (Fun-CosyVoice3-0.5B-2512) inference in plain PyTorch.

Importing this package is cheap: it does not import torch. `CosyVoice3` (the pipeline) is
loaded on first access, so the app process can use `cosyvoice3.frontend.prompt` and the presets without
pulling in torch.
"""

__all__ = ["CosyVoice3"]


def __getattr__(name):
    if name == "CosyVoice3":
        from .pipeline import CosyVoice3

        return CosyVoice3
    raise AttributeError(name)
