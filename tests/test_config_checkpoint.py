"""Reading a model directory: the HyperPyYAML config as data, and strict checkpoint loading."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from cosyvoice3.checkpoint import fold_weight_norm, load_strict, read_state_dict, unfold_weight_norm
from cosyvoice3.config import load_config
from cosyvoice3.errors import CheckpointMismatchError, ModelLoadError
from cosyvoice3.pipeline import CosyVoice3
from cosyvoice3.tools.demo_yaml import render_yaml

GOLDEN_MODEL = Path(__file__).resolve().parent / "golden" / "model"


def test_golden_config_values():
    cfg = load_config(GOLDEN_MODEL)
    assert (cfg.qwen.hidden_size, cfg.qwen.num_hidden_layers, cfg.qwen.num_key_value_heads) == (16, 2, 1)
    assert cfg.flow.dit.static_chunk_size == 50  # `!ref <chunk_size> * <token_mel_ratio>`
    assert cfg.flow.cfm.sigma_min == 1e-6 and cfg.flow.cfm.inference_cfg_rate == 0.7
    assert cfg.flow.pre_lookahead_channels == 128 and cfg.hift.f0_cond_channels == 32
    assert cfg.hift.upsample_rates == (8, 5, 3) and cfg.mel.fmax is None


def test_rendered_yaml_reads_back_the_same(tmp_path):
    cfg = load_config(GOLDEN_MODEL)
    shutil.copytree(GOLDEN_MODEL / "CosyVoice-BlankEN", tmp_path / "CosyVoice-BlankEN")
    (tmp_path / "cosyvoice3.yaml").write_text(render_yaml(cfg))
    assert load_config(tmp_path) == cfg


@pytest.mark.parametrize("edit,message", [
    (lambda y: "", "not a YAML mapping"),
    (lambda y: y.replace("CosyVoice3LM", "Qwen2LM"), "expected CosyVoice3LM"),
    (lambda y: y.replace("flow: !new", "flaw: !new"), "missing 'flow'"),
    (lambda y: y + "\n  bad: [indent\n", "cannot parse"),
])
def test_broken_yaml_is_a_model_load_error(tmp_path, edit, message):
    shutil.copytree(GOLDEN_MODEL, tmp_path / "m")
    path = tmp_path / "m" / "cosyvoice3.yaml"
    path.write_text(edit(path.read_text()))
    with pytest.raises(ModelLoadError, match=message):
        load_config(tmp_path / "m")


def test_missing_directory_and_files_are_named(tmp_path):
    with pytest.raises(ModelLoadError, match="model directory not found"):
        CosyVoice3.from_pretrained(tmp_path / "nowhere")
    shutil.copytree(GOLDEN_MODEL, tmp_path / "m")
    (tmp_path / "m" / "hift.pt").unlink()
    with pytest.raises(ModelLoadError, match="hift.pt"):
        CosyVoice3.from_pretrained(tmp_path / "m")


def test_corrupt_and_non_tensor_checkpoints_are_refused(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"not a zip file at all")
    with pytest.raises(ModelLoadError, match="cannot read checkpoint"):
        read_state_dict(tmp_path / "garbage.pt")
    torch.save({"w": torch.ones(2), "step": 3}, tmp_path / "mixed.pt")
    with pytest.raises(ModelLoadError, match="not a state_dict of tensors"):
        read_state_dict(tmp_path / "mixed.pt")


def test_strict_loading_names_missing_unexpected_and_misshaped_keys():
    module = torch.nn.Linear(3, 2)
    state = {"weight": torch.zeros(2, 4), "extra": torch.zeros(1)}
    with pytest.raises(CheckpointMismatchError) as e:
        load_strict(module, state, "demo.pt")
    text = str(e.value)
    assert "demo.pt" in text and "bias" in text and "extra" in text and "weight: file (2, 4) vs model (2, 3)" in text


def test_weight_norm_unfold_then_fold_is_the_identity():
    w = torch.randn(4, 3, 5, dtype=torch.float64)
    packed = unfold_weight_norm({"conv.weight": w, "conv.bias": torch.zeros(4)}, ["conv"])
    assert set(packed) == {"conv.bias", "conv.parametrizations.weight.original0",
                           "conv.parametrizations.weight.original1"}
    assert torch.allclose(fold_weight_norm(packed)["conv.weight"], w)
    legacy = {"conv.weight_g": packed["conv.parametrizations.weight.original0"],
              "conv.weight_v": packed["conv.parametrizations.weight.original1"]}
    assert torch.allclose(fold_weight_norm(legacy)["conv.weight"], w)
