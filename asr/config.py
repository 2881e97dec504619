"""The recogniser's hyperparameters, read from the released `config.yaml`, and its file names.

The released directory (FunAudioLLM/SenseVoiceSmall) holds `config.yaml` (FunASR's format:
`encoder_conf`, `frontend_conf`, ...), `model.pt`, `am.mvn`, the sentencepiece model and
`configuration.json` (ModelScope's pointer to the other files). Only the fields that shape the
network and the front end are read; training settings are ignored. A config that names another
architecture is refused with a `ModelLoadError`, so a wrong directory fails at load, not with odd
text later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from cosyvoice3.errors import ModelLoadError

CONFIG_NAME = "config.yaml"
CHECKPOINT_NAME = "model.pt"
CMVN_NAME = "am.mvn"
BPE_NAME = "chn_jpn_yue_eng_ko_spectok.bpe.model"
CONFIGURATION_NAME = "configuration.json"
FILES = (CONFIG_NAME, CHECKPOINT_NAME, CMVN_NAME, BPE_NAME, CONFIGURATION_NAME)
DEMO_MARKER = "cosyfast_asr_demo.json"  # in the project's random recogniser only

ENCODER_CLASS = "SenseVoiceEncoderSmall"
MODEL_CLASS = "SenseVoiceSmall"


@dataclass(frozen=True)
class SenseVoiceConfig:
    """Defaults are the released SenseVoice-Small's.

    Encoder: `num_blocks` SAN-M layers (the first maps the `input_size` LFR features to
    `output_size`), `after_norm`, then `tp_blocks` more layers and `tp_norm`. Front end: Kaldi
    fbank of `n_mels` bins over `frame_length`/`frame_shift` ms at `sample_rate`, stacked by LFR
    (`lfr_m` frames every `lfr_n`).
    """

    output_size: int = 512
    attention_heads: int = 4
    linear_units: int = 2048
    num_blocks: int = 50
    tp_blocks: int = 20
    kernel_size: int = 11
    sanm_shift: int = 0
    sample_rate: int = 16000
    window: str = "hamming"
    n_mels: int = 80
    frame_length_ms: int = 25
    frame_shift_ms: int = 10
    lfr_m: int = 7
    lfr_n: int = 6

    @property
    def input_size(self) -> int:
        return self.n_mels * self.lfr_m

    def __post_init__(self):
        if self.output_size % self.attention_heads:
            raise ModelLoadError(f"output_size {self.output_size} is not divisible by "
                                 f"attention_heads {self.attention_heads}")
        if self.num_blocks < 1 or self.tp_blocks < 0 or self.kernel_size < 1:
            raise ModelLoadError("num_blocks must be >= 1, tp_blocks >= 0 and kernel_size >= 1")


def load_config(model_dir: str | Path) -> SenseVoiceConfig:
    """Read `<model_dir>/config.yaml` (plain YAML; FunASR's `${...}` references stay strings)."""
    path = Path(model_dir) / CONFIG_NAME
    if not path.is_file():
        raise ModelLoadError(f"recogniser config not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if raw.get("model") != MODEL_CLASS or raw.get("encoder") != ENCODER_CLASS:
        raise ModelLoadError(f"{path} describes model {raw.get('model')!r} with encoder {raw.get('encoder')!r}; "
                             f"expected {MODEL_CLASS} with {ENCODER_CLASS}")
    enc = raw.get("encoder_conf") or {}
    front = raw.get("frontend_conf") or {}
    if enc.get("selfattention_layer_type", "sanm") != "sanm" or not enc.get("normalize_before", True):
        raise ModelLoadError(f"{path}: only the SAN-M encoder with pre-normalisation is supported")
    defaults = SenseVoiceConfig()
    try:
        return SenseVoiceConfig(
            output_size=int(enc.get("output_size", defaults.output_size)),
            attention_heads=int(enc.get("attention_heads", defaults.attention_heads)),
            linear_units=int(enc.get("linear_units", defaults.linear_units)),
            num_blocks=int(enc.get("num_blocks", defaults.num_blocks)),
            tp_blocks=int(enc.get("tp_blocks", defaults.tp_blocks)),
            kernel_size=int(enc.get("kernel_size", defaults.kernel_size)),
            sanm_shift=int(enc.get("sanm_shfit", defaults.sanm_shift)),  # sic: FunASR's spelling
            sample_rate=int(front.get("fs", defaults.sample_rate)),
            window=str(front.get("window", defaults.window)),
            n_mels=int(front.get("n_mels", defaults.n_mels)),
            frame_length_ms=int(front.get("frame_length", defaults.frame_length_ms)),
            frame_shift_ms=int(front.get("frame_shift", defaults.frame_shift_ms)),
            lfr_m=int(front.get("lfr_m", defaults.lfr_m)),
            lfr_n=int(front.get("lfr_n", defaults.lfr_n)),
        )
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: {exc}") from exc


def render_config(cfg: SenseVoiceConfig, title: str) -> str:
    """`config.yaml` in the released layout (the sections `load_config` reads)."""
    doc = {
        "encoder": ENCODER_CLASS,
        "encoder_conf": {
            "output_size": cfg.output_size, "attention_heads": cfg.attention_heads,
            "linear_units": cfg.linear_units, "num_blocks": cfg.num_blocks, "tp_blocks": cfg.tp_blocks,
            "dropout_rate": 0.1, "positional_dropout_rate": 0.1, "attention_dropout_rate": 0.1,
            "input_layer": "pe", "pos_enc_class": "SinusoidalPositionEncoder", "normalize_before": True,
            "kernel_size": cfg.kernel_size, "sanm_shfit": cfg.sanm_shift, "selfattention_layer_type": "sanm"},
        "model": MODEL_CLASS,
        "model_conf": {"length_normalized_loss": True, "sos": 1, "eos": 2, "ignore_id": -1},
        "tokenizer": "SentencepiecesTokenizer",
        "tokenizer_conf": {"bpemodel": None, "unk_symbol": "<unk>", "split_with_space": True},
        "frontend": "WavFrontend",
        "frontend_conf": {
            "fs": cfg.sample_rate, "window": cfg.window, "n_mels": cfg.n_mels,
            "frame_length": cfg.frame_length_ms, "frame_shift": cfg.frame_shift_ms,
            "lfr_m": cfg.lfr_m, "lfr_n": cfg.lfr_n, "cmvn_file": None},
    }
    return f"# {title}\n" + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
