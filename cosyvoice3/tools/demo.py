"""The demo checkpoint: a random CosyVoice3 model directory in the official file layout.

    python -m cosyvoice3.demo DIR [--full-size] [--seed N] [--device cpu|cuda]

Writes cosyvoice3.yaml, llm.pt, flow.pt, hift.pt (weight norm in the official parametrization
format), CosyVoice-BlankEN/ (config.json + a small byte-level tokenizer), campplus.onnx and
speech_tokenizer_v3.onnx (tiny stand-ins with the real input/output names), and a marker file
that tells the app this is not a real model. The tiny default builds in seconds and is what the
tests and the offline app use; `--full-size` has the hyperparameters of the released model
(random weights, about 2 GB) for speed and precision work on a GPU. Same seed -> same files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from cosyvoice3.checkpoint import unfold_weight_norm
from cosyvoice3.config import (
    QWEN_DIR,
    YAML_NAME,
    DiTConfig,
    FlowConfig,
    HiFTConfig,
    LLMConfig,
    ModelConfig,
    Qwen2Config,
)
from cosyvoice3.files import atomic_write
from cosyvoice3.frontend.tokenizer import write_demo_tokenizer
from cosyvoice3.nn.flow import CausalFlow
from cosyvoice3.nn.hift import CausalHiFT
from cosyvoice3.nn.llm import CosyVoice3LM
from cosyvoice3.pipeline import DEMO_MARKER

from .demo_onnx import write_demo_campplus, write_demo_speech_tokenizer
from .demo_yaml import qwen_config_json, render_yaml
from .once import ensure_built, marker_says

STOP_IDS = slice(6561, 6761)


def tiny_config() -> ModelConfig:
    """Small sizes (like the golden set's): a CPU synthesises seconds of audio in about a second."""
    qwen = Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                       intermediate_size=64)
    return ModelConfig(
        qwen=qwen,
        llm=LLMConfig(input_size=32, output_size=32),
        flow=FlowConfig(pre_lookahead_channels=64,
                        dit=DiTConfig(dim=64, depth=2, heads=4, dim_head=16, ff_mult=2)),
        hift=HiFTConfig(base_channels=32, f0_cond_channels=32),
    )


def full_size_config() -> ModelConfig:
    """The hyperparameters of the released Fun-CosyVoice3-0.5B-2512 (the dataclass defaults)."""
    return ModelConfig()


@torch.no_grad()
def build_modules(cfg: ModelConfig, seed: int, device: str = "cpu"):
    """Randomly initialised LLM, flow and HiFT with a few scalings that keep the demo well behaved."""
    torch.manual_seed(seed)
    with torch.device(device):
        llm = CosyVoice3LM(cfg.llm, cfg.qwen)
        flow = CausalFlow(cfg.flow)
        hift = CausalHiFT(cfg.hift)
    # Stop tokens slightly less likely, so sampling runs for a while (as in the golden set).
    llm.llm_decoder.weight[STOP_IDS] *= 0.9
    return llm, flow, hift


def _save(state: dict, path: Path) -> None:
    """torch.save of CPU copies; tensors shared in the module (the tied lm_head) stay shared."""
    copies: dict[int, torch.Tensor] = {}
    for v in state.values():
        if v.data_ptr() not in copies:
            copies[v.data_ptr()] = v.detach().cpu().contiguous()
    cpu = {k: copies[v.data_ptr()] for k, v in state.items()}
    atomic_write(path, lambda f: torch.save(cpu, f))


def write_demo_model(out_dir: str | Path, full_size: bool = False, seed: int = 0, device: str = "cpu") -> Path:
    """Write the demo model directory; returns its path. Existing files are overwritten."""
    out = Path(out_dir)
    (out / QWEN_DIR).mkdir(parents=True, exist_ok=True)
    cfg = full_size_config() if full_size else tiny_config()
    llm, flow, hift = build_modules(cfg, seed, device)

    (out / YAML_NAME).write_text(render_yaml(cfg, title="cosyfast demo model (random weights: not speech)"),
                                 encoding="utf-8")
    (out / QWEN_DIR / "config.json").write_text(json.dumps(qwen_config_json(cfg.qwen), indent=2) + "\n")
    write_demo_tokenizer(out / QWEN_DIR)
    _save(llm.state_dict(), out / "llm.pt")
    _save(flow.state_dict(), out / "flow.pt")
    _save(unfold_weight_norm(hift.state_dict(), hift.weight_norm_layer_names()), out / "hift.pt")
    write_demo_campplus(out / "campplus.onnx", seed=seed)
    write_demo_speech_tokenizer(out / "speech_tokenizer_v3.onnx", seed=seed)
    (out / DEMO_MARKER).write_text(json.dumps({"seed": seed, "full_size": full_size,
                                               "note": "random weights: output is not speech"}) + "\n")
    return out


def ensure_demo_model(out_dir: str | Path, seed: int = 0) -> Path:
    """The tiny demo model in `out_dir`, built once (a complete marker file means it is there)."""
    files = ("llm.pt", "flow.pt", "hift.pt", YAML_NAME)
    return ensure_built(out_dir, lambda out: marker_says(out, DEMO_MARKER, seed, files),
                        lambda tmp: write_demo_model(tmp, seed=seed))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cosyvoice3.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", help="directory to write (created if missing)")
    p.add_argument("--full-size", action="store_true", help="real hyperparameters (about 2 GB)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="where to initialise the weights (cuda is faster for --full-size)")
    args = p.parse_args(argv)
    out = write_demo_model(args.out_dir, full_size=args.full_size, seed=args.seed, device=args.device)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(json.dumps({"model_dir": str(out), "full_size": args.full_size, "bytes": size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
