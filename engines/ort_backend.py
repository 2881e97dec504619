"""ONNX Runtime runners: the CUDA provider when `onnxruntime-gpu` is installed, the CPU one otherwise.

With the CUDA provider, inputs already on the GPU are bound in place (IOBinding) after the
caller's stream is synchronised; outputs come back through host memory, because the stock
`OrtValue` has no zero-copy hand-over to torch. With the CPU provider, CUDA inputs are copied to
the host and the outputs moved back to the inputs' device, so the runner obeys the `Runner`
contract anywhere (slowly: it is the fallback before plain PyTorch on the CPU).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from .runner import DTYPES, BackendUnavailable, Runner, RunnerInfo, TensorSpec

_NP = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "int64": np.int64, "bool": np.bool_}


def ort_version() -> str:
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise BackendUnavailable(f"onnxruntime is not installed ({e})") from e
    return ort.__version__


def ort_providers(device: torch.device) -> list[str]:
    """The providers a session for `device` uses; CUDA only where onnxruntime-gpu offers it."""
    import onnxruntime as ort

    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OrtRunner(Runner):
    def __init__(self, onnx_path: str | Path, module: str, inputs: tuple[TensorSpec, ...],
                 outputs: tuple[TensorSpec, ...], device: torch.device | str = "cpu", precision: str = "fp32",
                 dims: dict[str, tuple[int, int]] | None = None, threads: int | None = None):
        """onnx_path: exported model whose input/output names are those of `inputs`/`outputs`."""
        version = ort_version()
        import onnxruntime as ort

        self.device, self.path = torch.device(device), Path(onnx_path)
        providers = ort_providers(self.device)
        self.on_gpu = providers[0] == "CUDAExecutionProvider"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or int(os.environ.get("COSYFAST_ORT_THREADS", "0"))
        provider_options = [{"device_id": self.device.index or 0}, {}] if self.on_gpu else [{}]
        self.session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=providers,
                                            provider_options=provider_options)
        names_in = [i.name for i in self.session.get_inputs()]
        names_out = [o.name for o in self.session.get_outputs()]
        if set(names_in) != {s.name for s in inputs} or set(names_out) != {s.name for s in outputs}:
            raise BackendUnavailable(f"{onnx_path}: names {names_in} -> {names_out} differ from the module's")
        where = "cuda" if self.on_gpu else "cpu"
        self.info = RunnerInfo(module, "onnxruntime", precision, where, inputs, outputs, dict(dims or {}),
                               f"onnxruntime {version} {providers[0]}")

    def _run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out_device = next(iter(inputs.values())).device
        if self.on_gpu and out_device.type == "cuda":
            arrays = self._run_bound(inputs)
        else:
            feed = {s.name: inputs[s.name].detach().to("cpu", DTYPES[s.dtype]).contiguous().numpy()
                    for s in self.info.inputs}
            arrays = self.session.run([s.name for s in self.info.outputs], feed)
        return {s.name: torch.from_numpy(np.ascontiguousarray(a)).to(out_device, DTYPES[s.dtype])
                for s, a in zip(self.info.outputs, arrays)}

    def _run_bound(self, inputs: Mapping[str, torch.Tensor]) -> list[np.ndarray]:
        binding = self.session.io_binding()
        device_id = self.device.index or 0
        keep = []
        for s in self.info.inputs:
            t = inputs[s.name].detach().to(self.device, DTYPES[s.dtype]).contiguous()
            keep.append(t)
            binding.bind_input(s.name, "cuda", device_id, _NP[s.dtype], list(t.shape), t.data_ptr())
        for s in self.info.outputs:
            binding.bind_output(s.name, "cuda", device_id)
        torch.cuda.current_stream(self.device).synchronize()  # ORT runs on its own stream
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def close(self):
        self.session = None
