"""Reading the official checkpoint files (`llm.pt`, `flow.pt`, `hift.pt`) into our modules.

Files are read with `torch.load(weights_only=True)`; nothing is unpickled. Key names are those
of the official files. The only adaptation is at the boundary: weight-normalised convolutions
(`<name>.parametrizations.weight.original0/1` or the older `<name>.weight_g/_v`) are folded into
a plain `<name>.weight`, and a `generator.` prefix (checkpoints saved from the GAN wrapper) is
stripped. Loading is strict: any missing, unexpected or wrongly shaped tensor raises
`CheckpointMismatchError` naming the file and the keys. `unfold_weight_norm` does the reverse,
for writing checkpoints in the official format (demo model).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointMismatchError, ModelLoadError


def read_state_dict(path: str | Path, map_location="cpu", mmap: bool = True) -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely (`weights_only=True`) and check that it is a flat tensor dict."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint file not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as first:  # mmap needs the zip format; fall back to a plain read
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:
            raise ModelLoadError(f"cannot read checkpoint {path}: {e}") from first
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path}: not a state_dict of tensors")
    return state


def fold_weight_norm(state: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Replace weight-norm pairs (g, v) by the effective weight `g * v / ||v||` (norm over dims > 0).

    The fold is computed in float64; results keep the file's dtype, or all become `dtype` if given
    (the F0 predictor runs in float64, as the reference does).
    """
    out: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        for g_suffix, v_suffix in ((".parametrizations.weight.original0", ".parametrizations.weight.original1"),
                                   (".weight_g", ".weight_v")):
            if key.endswith(g_suffix):
                pairs.setdefault(key[: -len(g_suffix)], {})["g"] = value
                break
            if key.endswith(v_suffix):
                pairs.setdefault(key[: -len(v_suffix)], {})["v"] = value
                break
        else:
            out[key] = value if dtype is None else value.to(dtype)
    for name, gv in pairs.items():
        if set(gv) != {"g", "v"}:
            out.update({f"{name}.weight_{k}": v for k, v in gv.items()})  # left for strict loading to report
            continue
        g, v = gv["g"].double(), gv["v"].double()
        norm = v.flatten(1).norm(dim=1).reshape((-1,) + (1,) * (v.dim() - 1))
        out[name + ".weight"] = (v * (g / norm)).to(dtype or gv["v"].dtype)
    return out


def unfold_weight_norm(state: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    """Write `<name>.weight` of each listed layer as the official `parametrizations` pair."""
    out = dict(state)
    for name in names:
        w = out.pop(name + ".weight")
        g = w.flatten(1).norm(dim=1).reshape((-1,) + (1,) * (w.dim() - 1))
        out[name + ".parametrizations.weight.original0"] = g.clone()
        out[name + ".parametrizations.weight.original1"] = w.clone()
    return out


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], file: str | Path) -> None:
    """Copy `state` into `module`, refusing any missing, unexpected or differently shaped key."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shape_errors = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                    for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shape_errors:
        raise CheckpointMismatchError(str(file), missing, unexpected, shape_errors)
    module.load_state_dict(state, strict=True)
