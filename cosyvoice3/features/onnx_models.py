"""Runners for the two ONNX models of a model directory, through onnxruntime.

- `SpeakerEncoder`: `campplus.onnx` (CAM++), mean-normalised Kaldi fbank (1, T, 80) -> a
  192-d speaker embedding. CPU, one intra-op thread, full graph optimisation (as the reference).
- `SpeechTokenizer`: `speech_tokenizer_v3.onnx`, Whisper log-mel (1, 128, T) + its length ->
  speech token ids at 25 Hz. CUDA when onnxruntime offers it, CPU otherwise.

Inputs and outputs are addressed by position: the official code does so and the released
models' output names are not documented. A missing or unloadable file raises ModelLoadError.
`runner` (a `cosyvoice3.backends.FrontendSession`, e.g. a TensorRT engine of the same file) runs
the model instead of the file's own ONNX Runtime session, which still names the inputs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from cosyvoice3.errors import ModelLoadError

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def _open_session(path: str | Path, what: str, providers: list[str], n_inputs: int,
                  intra_op_threads: int) -> ort.InferenceSession:
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{what} model file not found: {path}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = intra_op_threads
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        raise ModelLoadError(f"cannot load the {what} model {path}: {e}") from e
    found = len(session.get_inputs())
    if found != n_inputs:
        raise ModelLoadError(f"{what} model {path} has {found} inputs, expected {n_inputs}")
    return session


class SpeakerEncoder:
    """CAM++ speaker encoder (`campplus.onnx`)."""

    def __init__(self, path: str | Path, providers: list[str] | None = None, intra_op_threads: int = 1,
                 runner=None):
        self.path = Path(path)
        self.session = _open_session(self.path, "speaker encoder", providers or [CPU], 1, intra_op_threads)
        self.runner = runner or self.session
        self.input_name = self.session.get_inputs()[0].name

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def embed(self, fbank: np.ndarray) -> np.ndarray:
        """fbank: float32 (1, T, 80) or (T, 80), mean-normalised Kaldi fbank (features.campplus_input).
        Returns the speaker embedding, float32 (192,)."""
        fbank = np.asarray(fbank, dtype=np.float32)
        if fbank.ndim == 2:
            fbank = fbank[None]
        outputs = self.runner.run(None, {self.input_name: np.ascontiguousarray(fbank)})
        return np.asarray(outputs[0], dtype=np.float32).reshape(-1)


class SpeechTokenizer:
    """Speech tokenizer v3 (`speech_tokenizer_v3.onnx`): 25 Hz tokens, vocabulary 6561."""

    def __init__(self, path: str | Path, providers: list[str] | None = None, intra_op_threads: int = 1,
                 runner=None):
        self.path = Path(path)
        if providers is None:
            providers = [CUDA, CPU] if CUDA in ort.get_available_providers() else [CPU]
        self.session = _open_session(self.path, "speech tokenizer", providers, 2, intra_op_threads)
        self.runner = runner or self.session
        if CUDA in providers and CUDA not in self.session.get_providers():
            log.warning("speech tokenizer runs on CPU: onnxruntime could not start its CUDA provider")
        self.feats_name, self.length_name = (i.name for i in self.session.get_inputs())

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def tokenize(self, log_mel: np.ndarray) -> np.ndarray:
        """log_mel: float32 (1, 128, T) or (128, T), Whisper log-mel (features.whisper_log_mel).
        Returns int32 token ids (N,), N ~ T / 4."""
        log_mel = np.asarray(log_mel, dtype=np.float32)
        if log_mel.ndim == 2:
            log_mel = log_mel[None]
        length = np.array([log_mel.shape[2]], dtype=np.int32)
        outputs = self.runner.run(None, {self.feats_name: np.ascontiguousarray(log_mel),
                                          self.length_name: length})
        return np.asarray(outputs[0]).reshape(-1).astype(np.int32)
