"""ONNX export of a module's wrapper (engines.modules): named inputs/outputs, dynamic axes, opset 17+.

FP32 exports trace the wrapper as it is. FP16/BF16 exports trace a half/bfloat16 copy of it
inside `PrecisionBoundary`, so the graph's inputs and outputs stay float32 (callers and fallbacks
never see another dtype) while every weight and activation inside is 16-bit (buffers, i.e. the
DiT's rotary frequencies, stay float32: see `to_precision`), except where the
model itself computes in float32 (the DiT's LayerNorm, time embedding and rotary rotation; the
Qwen2 RMSNorm and rotary tables). TensorRT builds these exports as strongly typed networks, so
those float32 islands survive in the engine; this is what keeps the FP16 DiT free of the
overflow that gives the official FP16 engine NaN audio. Softmax is exported inside the attention
pattern that TensorRT fuses, which accumulates in float32.

The `torch.export`-based exporter (`dynamo=True`, opset 18) is used with one `Dim` per named
dynamic dimension, shared by every tensor that carries it. The legacy TorchScript exporter cannot
export the model as written: it traces `x.shape[-1]` in `F.layer_norm(x, (x.shape[-1],))` as a
dynamic value, which LayerNormalization does not accept.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from .modules import ModuleDef
from .runner import DTYPES
from .torch_backend import copy_module, to_precision

OPSET = 18
EXPORT_VERSION = "1"  # bump when a wrapper or the export recipe changes: part of every cache key
TRACE_SIZES = {"batch": 2, "frames": 130, "length": 7, "slots": 23, "samples": 480 * 13, "mel_frames": 13}


class PrecisionBoundary(nn.Module):
    """float32 in/out around a wrapper that computes in `dtype`."""

    def __init__(self, wrapper: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner, self.dtype = wrapper, dtype

    def forward(self, *args):
        args = [a.to(self.dtype) if a.is_floating_point() else a for a in args]
        return tuple(o.float() if o.is_floating_point() else o for o in self.inner(*args))


def export_wrapper(mdef: ModuleDef, precision: str) -> nn.Module:
    """The module that is traced: a functional (non-mutating) copy in the export precision."""
    wrapper = mdef.wrapper
    if hasattr(wrapper, "functional"):
        wrapper = copy.copy(wrapper)
        wrapper.functional = True
    if precision == "fp32":
        return wrapper.eval()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    device = next((p.device for p in wrapper.parameters()), torch.device("cpu"))
    return PrecisionBoundary(to_precision(copy_module(wrapper), device, dtype), dtype).eval()


def export_onnx(mdef: ModuleDef, path: str | Path, precision: str = "fp32", opset: int = OPSET,
                device: torch.device | str | None = None) -> Path:
    """Trace `mdef.wrapper` into `path`; every dim named by a string in the specs is dynamic."""
    path = Path(path)
    if device is None:
        device = next((p.device for p in mdef.wrapper.parameters()), torch.device("cpu"))
    device = torch.device(device)
    wrapper = export_wrapper(mdef, precision)
    example = mdef.example(TRACE_SIZES, device)
    args = tuple(example[s.name].to(DTYPES[s.dtype]) for s in mdef.inputs)
    dims = {d: torch.export.Dim(d, min=lo, max=hi) for d, (lo, _, hi) in mdef.dims.items()}
    dims.update({d: a * dims[base] + b for d, (base, a, b) in mdef.derived.items()})
    dynamic = tuple({i: dims[d] for i, d in enumerate(s.shape) if isinstance(d, str)} or None for s in mdef.inputs)
    if isinstance(wrapper, PrecisionBoundary):
        dynamic = {"args": dynamic}  # its forward takes *args
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(wrapper, args, input_names=[s.name for s in mdef.inputs],
                                    output_names=[s.name for s in mdef.outputs], dynamic_shapes=dynamic,
                                    opset_version=opset, dynamo=True, verbose=False)
    program.save(str(path), external_data=False)
    check_onnx(path, mdef)
    return path


def check_onnx(path: str | Path, mdef: ModuleDef) -> None:
    """The file is valid ONNX with exactly the module's input and output names."""
    import onnx

    onnx.checker.check_model(str(path))
    model = onnx.load(str(path), load_external_data=False)
    names_in = [i.name for i in model.graph.input]
    names_out = [o.name for o in model.graph.output]
    if names_in != [s.name for s in mdef.inputs] or names_out != [s.name for s in mdef.outputs]:
        raise RuntimeError(f"{path}: exported names {names_in} -> {names_out} differ from the module's")
