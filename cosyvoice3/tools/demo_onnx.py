"""Tiny stand-ins for `campplus.onnx` and `speech_tokenizer_v3.onnx`, for the demo model and tests.

They have the real models' input names, shapes and dtypes, and outputs of the real shapes that
depend on the audio, so different prompts give different embeddings and tokens. They are random
projections, not trained models. Built with onnx.helper from a seed: the same seed gives the same
bytes; each file is a few kB to tens of kB.

- campplus: "input" (1, T, 80) float32 -> (1, 192) float32:
  tanh(rms over time of each bin @ W + b).
- speech tokenizer: "feats" (1, 128, T) float32, "feats_length" (1,) int32 -> int64 (1, ceil(T'/4))
  ids in [0, 6561), T' = feats_length: the first T' frames, centred in time, averaged over 4
  frames (25 Hz), projected to 8 values, each quantised by round(tanh(.)) to {-1, 0, 1} and read as
  the 8 ternary digits of the id (a finite scalar quantiser like the real one's 3^8 codes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
FBANK_BINS = 80
EMBEDDING_DIM = 192
TOKENIZER_MELS = 128
FSQ_DIGITS = 8          # 3 ** 8 = 6561 codes
FSQ_GAIN = 3.0


def _rng(seed: int, model: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), model])


def _save(graph: onnx.GraphProto, path: str | Path, name: str) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="cosyfast-demo", ir_version=IR_VERSION, doc_string=name)
    onnx.checker.check_model(model)
    path = Path(path)
    path.write_bytes(model.SerializeToString())
    return path


def write_demo_campplus(path: str | Path, seed: int = 0) -> Path:
    """Write a stand-in CAM++ model: "input" (1, T, 80) float32 -> "embedding" (1, 192) float32."""
    rng = _rng(seed, 1)
    weight = (rng.standard_normal((FBANK_BINS, EMBEDDING_DIM)) / np.sqrt(FBANK_BINS)).astype(np.float32)
    bias = (0.1 * rng.standard_normal(EMBEDDING_DIM)).astype(np.float32)
    nodes = [
        helper.make_node("Mul", ["input", "input"], ["squared"]),
        helper.make_node("ReduceMean", ["squared"], ["mean_square"], axes=[1], keepdims=0),  # (1, 80)
        helper.make_node("Sqrt", ["mean_square"], ["rms"]),
        helper.make_node("MatMul", ["rms", "weight"], ["projected"]),                        # (1, 192)
        helper.make_node("Add", ["projected", "bias"], ["shifted"]),
        helper.make_node("Tanh", ["shifted"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes, "demo_campplus",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, "T", FBANK_BINS])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, EMBEDDING_DIM])],
        initializer=[numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")])
    return _save(graph, path, "demo CAM++ speaker encoder (random, not a trained model)")


def write_demo_speech_tokenizer(path: str | Path, seed: int = 0) -> Path:
    """Write a stand-in speech tokenizer: "feats" (1, 128, T) float32 + "feats_length" (1,) int32
    -> "tokens" int64 (1, N), N = ceil(feats_length / 4), ids in [0, 6561)."""
    rng = _rng(seed, 2)
    weight = (rng.standard_normal((TOKENIZER_MELS, FSQ_DIGITS)) / np.sqrt(TOKENIZER_MELS)).astype(np.float32)
    digit_values = (3.0 ** np.arange(FSQ_DIGITS)).astype(np.float32)                  # (8,)
    constants = [
        numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "time_axis"),
        numpy_helper.from_array(weight, "weight"),
        numpy_helper.from_array(np.array(FSQ_GAIN, dtype=np.float32), "gain"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        numpy_helper.from_array(digit_values, "digit_values"),
    ]
    nodes = [
        helper.make_node("Cast", ["feats_length"], ["length"], to=TensorProto.INT64),
        helper.make_node("Slice", ["feats", "zero", "length", "time_axis"], ["valid"]),      # (1, 128, T')
        helper.make_node("ReduceMean", ["valid"], ["time_mean"], axes=[2], keepdims=1),
        helper.make_node("Sub", ["valid", "time_mean"], ["centred"]),
        helper.make_node("AveragePool", ["centred"], ["pooled"], kernel_shape=[4], strides=[4],
                         ceil_mode=1),                                                     # (1, 128, N)
        helper.make_node("Transpose", ["pooled"], ["frames"], perm=[0, 2, 1]),             # (1, N, 128)
        helper.make_node("MatMul", ["frames", "weight"], ["projected"]),                  # (1, N, 8)
        helper.make_node("Mul", ["projected", "gain"], ["scaled"]),
        helper.make_node("Tanh", ["scaled"], ["bounded"]),
        helper.make_node("Round", ["bounded"], ["levels"]),                               # {-1, 0, 1}
        helper.make_node("Add", ["levels", "one"], ["digits"]),                           # {0, 1, 2}
        helper.make_node("MatMul", ["digits", "digit_values"], ["codes"]),                # (1, N)
        helper.make_node("Cast", ["codes"], ["tokens"], to=TensorProto.INT64),
    ]
    graph = helper.make_graph(
        nodes, "demo_speech_tokenizer",
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, [1, TOKENIZER_MELS, "T"]),
         helper.make_tensor_value_info("feats_length", TensorProto.INT32, [1])],
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, "N"])],
        initializer=constants)
    return _save(graph, path, "demo speech tokenizer v3 (random, not a trained model)")
