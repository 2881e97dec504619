"""Hyperparameters of a CosyVoice3 model directory.

The official `cosyvoice3.yaml` is HyperPyYAML: `!new:`/`!name:`/`!apply:` tags construct objects
of the official package and `!ref <key>` refers to other keys (sometimes inside a small
arithmetic expression). We never import that package: the tags are read as plain data and only
the numbers are kept, in the dataclasses below. `CosyVoice-BlankEN/config.json` gives the Qwen2
sizes. `cosyvoice3.tools.demo_yaml` writes the same format back, for the demo checkpoint.
"""

from __future__ import annotations

import ast
import json
import operator
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .errors import ModelLoadError

QWEN_DIR = "CosyVoice-BlankEN"
YAML_NAME = "cosyvoice3.yaml"


@dataclass
class Qwen2Config:
    hidden_size: int = 896
    num_hidden_layers: int = 24
    num_attention_heads: int = 14
    num_key_value_heads: int = 2
    intermediate_size: int = 4864
    vocab_size: int = 151936
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1e6
    max_position_embeddings: int = 32768
    tie_word_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass
class SamplingConfig:
    top_p: float = 0.8
    top_k: int = 25
    win_size: int = 10
    tau_r: float = 0.1


@dataclass
class LLMConfig:
    input_size: int = 896
    output_size: int = 896
    speech_token_size: int = 6561
    mix_ratio: tuple = (5, 15)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    min_token_text_ratio: float = 2.0
    max_token_text_ratio: float = 20.0


@dataclass
class DiTConfig:
    dim: int = 1024
    depth: int = 22
    heads: int = 16
    dim_head: int = 64
    ff_mult: int = 2
    mel_dim: int = 80
    mu_dim: int = 80
    spk_dim: int = 80
    out_channels: int = 80
    static_chunk_size: int = 50
    num_decoding_left_chunks: int = -1


@dataclass
class CFMConfig:
    in_channels: int = 240
    spk_emb_dim: int = 80
    sigma_min: float = 1e-6
    t_scheduler: str = "cosine"
    inference_cfg_rate: float = 0.7
    n_timesteps: int = 10


@dataclass
class FlowConfig:
    input_size: int = 80
    output_size: int = 80
    spk_embed_dim: int = 192
    vocab_size: int = 6561
    token_mel_ratio: int = 2
    pre_lookahead_len: int = 3
    pre_lookahead_channels: int = 1024
    cfm: CFMConfig = field(default_factory=CFMConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)


@dataclass
class HiFTConfig:
    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = 24000
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    nsf_voiced_threshold: float = 10.0
    upsample_rates: tuple = (8, 5, 3)
    upsample_kernel_sizes: tuple = (16, 11, 7)
    istft_n_fft: int = 16
    istft_hop_len: int = 4
    resblock_kernel_sizes: tuple = (3, 7, 11)
    resblock_dilation_sizes: tuple = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    source_resblock_kernel_sizes: tuple = (7, 7, 11)
    source_resblock_dilation_sizes: tuple = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99
    conv_pre_look_right: int = 4
    f0_in_channels: int = 80
    f0_cond_channels: int = 512
    f0_num_class: int = 1


@dataclass
class MelConfig:
    n_fft: int = 1920
    num_mels: int = 80
    sampling_rate: int = 24000
    hop_size: int = 480
    win_size: int = 1920
    fmin: float = 0.0
    fmax: float | None = None
    center: bool = False


@dataclass
class ModelConfig:
    sample_rate: int = 24000
    token_frame_rate: int = 25
    token_mel_ratio: int = 2
    chunk_size: int = 25
    qwen: Qwen2Config = field(default_factory=Qwen2Config)
    llm: LLMConfig = field(default_factory=LLMConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    hift: HiFTConfig = field(default_factory=HiFTConfig)
    mel: MelConfig = field(default_factory=MelConfig)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- yaml reading


class _Tagged(dict):
    """A mapping/sequence/scalar node that carried a HyperPyYAML tag."""

    def __init__(self, tag: str, value):
        super().__init__(value if isinstance(value, dict) else {})
        self.tag = tag
        self.value = value


class _Loader(yaml.SafeLoader):
    pass


def _construct_tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node):
    if isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return _Tagged(suffix, value)


_Loader.add_multi_constructor("!", _construct_tagged)

_REF = re.compile(r"<([^<>]+)>")
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv}


def _eval_arith(expr: str):
    """Evaluate a numeric expression of + - * / and numbers (what `!ref` expressions use)."""

    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)):
            return n.value
        if isinstance(n, ast.BinOp) and type(n.op) in _BINOPS:
            return _BINOPS[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -ev(n.operand)
        raise ValueError(f"unsupported expression in !ref: {expr!r}")

    return ev(ast.parse(expr, mode="eval"))


def _resolve(node, root: dict, depth: int = 0):
    if depth > 50:
        raise ValueError("!ref nesting too deep")
    if isinstance(node, _Tagged):
        if node.tag.startswith("ref"):
            text = str(node.value)
            refs = _REF.findall(text)
            if len(refs) == 1 and text.strip() == f"<{refs[0]}>":
                return _resolve(_lookup(root, refs[0]), root, depth + 1)
            substituted = _REF.sub(lambda m: repr(_resolve(_lookup(root, m.group(1)), root, depth + 1)), text)
            return _eval_arith(substituted)
        value = node.value
        if isinstance(value, dict):
            resolved = {k: _resolve(v, root, depth + 1) for k, v in value.items()}
        elif isinstance(value, list):
            resolved = [_resolve(v, root, depth + 1) for v in value]
        else:
            resolved = value
        out = _Tagged(node.tag, resolved)
        return out
    if isinstance(node, dict):
        return {k: _resolve(v, root, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, root, depth + 1) for v in node]
    return node


def _lookup(root: dict, dotted: str):
    cur = root
    for part in dotted.split("."):
        cur = cur[part]
    return cur


def read_hyperpyyaml(path: Path) -> dict:
    """Parse a HyperPyYAML file into plain dicts, with `!ref`s resolved and tags kept on `_Tagged`."""
    with open(path, encoding="utf-8") as f:
        raw = yaml.load(f, Loader=_Loader)
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path}: not a YAML mapping")
    return {k: _resolve(v, raw) for k, v in raw.items()}


def _pick(section: dict, dataclass_type, rename: dict | None = None, where: str = ""):
    """Build `dataclass_type` from the keys of `section` it knows, with optional renames."""
    rename = rename or {}
    known = {f for f in dataclass_type.__dataclass_fields__}
    kwargs = {}
    for key, value in section.items():
        name = rename.get(key, key)
        if name in known and not isinstance(value, _Tagged):
            kwargs[name] = _coerce(_tupleize(value), dataclass_type.__dataclass_fields__[name])
    try:
        return dataclass_type(**kwargs)
    except TypeError as e:  # pragma: no cover - defensive
        raise ModelLoadError(f"{where}: {e}") from e


def _coerce(value, fld):
    """YAML 1.1 reads `1e-06` as a string; turn such values into the field's number type."""
    if isinstance(value, str) and fld.type in ("float", "float | None", "int"):
        try:
            return int(value) if fld.type == "int" else float(value)
        except ValueError:
            return value
    if fld.type == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _tupleize(value):
    if isinstance(value, list):
        return tuple(_tupleize(v) for v in value)
    return value


def _require(section, key: str, where: str):
    if not isinstance(section, dict) or key not in section:
        raise ModelLoadError(f"{where}: missing '{key}'")
    return section[key]


def load_config(model_dir: str | Path) -> ModelConfig:
    """Read `cosyvoice3.yaml` and `CosyVoice-BlankEN/config.json` of an official model directory."""
    model_dir = Path(model_dir)
    yaml_path = model_dir / YAML_NAME
    if not yaml_path.is_file():
        raise ModelLoadError(f"{model_dir}: no {YAML_NAME} (is this a CosyVoice3 model directory?)")
    try:
        doc = read_hyperpyyaml(yaml_path)
    except (yaml.YAMLError, KeyError, ValueError) as e:
        raise ModelLoadError(f"{yaml_path}: cannot parse: {e}") from e
    where = str(yaml_path)

    llm_sec = _require(doc, "llm", where)
    flow_sec = _require(doc, "flow", where)
    hift_sec = _require(doc, "hift", where)
    if "CosyVoice3LM" not in getattr(llm_sec, "tag", ""):
        raise ModelLoadError(f"{where}: llm is {getattr(llm_sec, 'tag', '?')}, expected CosyVoice3LM")

    sampling = _pick(llm_sec.get("sampling", {}), SamplingConfig, where=where)
    llm = _pick(llm_sec, LLMConfig, rename={"llm_input_size": "input_size", "llm_output_size": "output_size"},
                where=where)
    llm.sampling = sampling

    dec = _require(flow_sec, "decoder", where + ":flow")
    est = _require(dec, "estimator", where + ":flow.decoder")
    dit = _pick(est, DiTConfig, where=where)
    cfm_params = dec.get("cfm_params", {})
    cfm_params = cfm_params.get("content", cfm_params) if isinstance(cfm_params, dict) else {}
    cfm = _pick({**cfm_params, **{k: v for k, v in dec.items() if k in ("in_channels", "spk_emb_dim")}},
                CFMConfig, where=where)
    pla = flow_sec.get("pre_lookahead_layer", {})
    flow = _pick(flow_sec, FlowConfig, where=where)
    flow.pre_lookahead_channels = int(pla.get("channels", flow.pre_lookahead_channels))
    flow.pre_lookahead_len = int(pla.get("pre_lookahead_len", flow.pre_lookahead_len))
    flow.cfm, flow.dit = cfm, dit

    hift = _pick(hift_sec, HiFTConfig, where=where)
    istft = hift_sec.get("istft_params", {})
    hift.istft_n_fft = int(istft.get("n_fft", hift.istft_n_fft))
    hift.istft_hop_len = int(istft.get("hop_len", hift.istft_hop_len))
    f0 = hift_sec.get("f0_predictor", {})
    hift.f0_in_channels = int(f0.get("in_channels", hift.f0_in_channels))
    hift.f0_cond_channels = int(f0.get("cond_channels", hift.f0_cond_channels))
    hift.f0_num_class = int(f0.get("num_class", hift.f0_num_class))

    mel_sec = doc.get("feat_extractor", {})
    mel = _pick(mel_sec, MelConfig, where=where) if isinstance(mel_sec, dict) else MelConfig()

    cfg = ModelConfig(
        sample_rate=int(doc.get("sample_rate", 24000)),
        token_frame_rate=int(doc.get("token_frame_rate", 25)),
        token_mel_ratio=int(doc.get("token_mel_ratio", 2)),
        chunk_size=int(doc.get("chunk_size", 25)),
        qwen=load_qwen_config(model_dir / QWEN_DIR),
        llm=llm, flow=flow, hift=hift, mel=mel,
    )
    if cfg.llm.input_size != cfg.qwen.hidden_size:
        raise ModelLoadError(f"{where}: llm_input_size {cfg.llm.input_size} != Qwen2 hidden_size "
                             f"{cfg.qwen.hidden_size}")
    return cfg


def load_qwen_config(qwen_dir: Path) -> Qwen2Config:
    path = Path(qwen_dir) / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{qwen_dir}: no config.json (the Qwen2 folder of the model directory)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path}: invalid JSON: {e}") from e
    return _pick(data, Qwen2Config, where=str(path))
