"""Writing a `cosyvoice3.yaml` (official HyperPyYAML layout) and a Qwen2 `config.json` from a
`ModelConfig`: what the demo checkpoint writer needs to produce the official file layout. The
reading side is `cosyvoice3.config`."""

from __future__ import annotations

import json

from cosyvoice3.config import ModelConfig, Qwen2Config


def render_yaml(cfg: ModelConfig, title: str = "CosyVoice3 model") -> str:
    """Write `cfg` as a `cosyvoice3.yaml` in the official HyperPyYAML layout."""
    f, d, h, c, s, m = cfg.flow, cfg.flow.dit, cfg.hift, cfg.flow.cfm, cfg.llm.sampling, cfg.mel

    def lst(v):
        return json.dumps([list(x) if isinstance(x, tuple) else x for x in v])

    return f"""# {title}
__set_seed1: !apply:random.seed [1986]
__set_seed2: !apply:numpy.random.seed [1986]
__set_seed3: !apply:torch.manual_seed [1986]
__set_seed4: !apply:torch.cuda.manual_seed_all [1986]

sample_rate: {cfg.sample_rate}
llm_input_size: {cfg.llm.input_size}
llm_output_size: {cfg.llm.output_size}
spk_embed_dim: {f.spk_embed_dim}
qwen_pretrain_path: ''
token_frame_rate: {cfg.token_frame_rate}
token_mel_ratio: {cfg.token_mel_ratio}

chunk_size: {cfg.chunk_size}
num_decoding_left_chunks: {d.num_decoding_left_chunks}

llm: !new:cosyvoice.llm.llm.CosyVoice3LM
    llm_input_size: !ref <llm_input_size>
    llm_output_size: !ref <llm_output_size>
    speech_token_size: {cfg.llm.speech_token_size}
    length_normalized_loss: True
    lsm_weight: 0
    mix_ratio: {lst(cfg.llm.mix_ratio)}
    llm: !new:cosyvoice.llm.llm.Qwen2Encoder
        pretrain_path: !ref <qwen_pretrain_path>
    sampling: !name:cosyvoice.utils.common.ras_sampling
        top_p: {s.top_p}
        top_k: {s.top_k}
        win_size: {s.win_size}
        tau_r: {s.tau_r}

flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithDiT
    input_size: {f.input_size}
    output_size: {f.output_size}
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: {f.vocab_size}
    input_frame_rate: !ref <token_frame_rate>
    only_mask_loss: True
    token_mel_ratio: !ref <token_mel_ratio>
    pre_lookahead_len: {f.pre_lookahead_len}
    pre_lookahead_layer: !new:cosyvoice.transformer.upsample_encoder.PreLookaheadLayer
        in_channels: {f.input_size}
        channels: {f.pre_lookahead_channels}
        pre_lookahead_len: {f.pre_lookahead_len}
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
        in_channels: {c.in_channels}
        n_spks: 1
        spk_emb_dim: {c.spk_emb_dim}
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: {c.sigma_min:g}
                solver: 'euler'
                t_scheduler: '{c.t_scheduler}'
                training_cfg_rate: 0.2
                inference_cfg_rate: {c.inference_cfg_rate}
                reg_loss_type: 'l1'
        estimator: !new:cosyvoice.flow.DiT.dit.DiT
            dim: {d.dim}
            depth: {d.depth}
            heads: {d.heads}
            dim_head: {d.dim_head}
            ff_mult: {d.ff_mult}
            mel_dim: {d.mel_dim}
            mu_dim: {d.mu_dim}
            spk_dim: {d.spk_dim}
            out_channels: {d.out_channels}
            static_chunk_size: !ref <chunk_size> * <token_mel_ratio>
            num_decoding_left_chunks: !ref <num_decoding_left_chunks>

hift: !new:cosyvoice.hifigan.generator.CausalHiFTGenerator
    in_channels: {h.in_channels}
    base_channels: {h.base_channels}
    nb_harmonics: {h.nb_harmonics}
    sampling_rate: !ref <sample_rate>
    nsf_alpha: {h.nsf_alpha}
    nsf_sigma: {h.nsf_sigma}
    nsf_voiced_threshold: {h.nsf_voiced_threshold:g}
    upsample_rates: {lst(h.upsample_rates)}
    upsample_kernel_sizes: {lst(h.upsample_kernel_sizes)}
    istft_params:
        n_fft: {h.istft_n_fft}
        hop_len: {h.istft_hop_len}
    resblock_kernel_sizes: {lst(h.resblock_kernel_sizes)}
    resblock_dilation_sizes: {lst(h.resblock_dilation_sizes)}
    source_resblock_kernel_sizes: {lst(h.source_resblock_kernel_sizes)}
    source_resblock_dilation_sizes: {lst(h.source_resblock_dilation_sizes)}
    lrelu_slope: {h.lrelu_slope}
    audio_limit: {h.audio_limit}
    conv_pre_look_right: {h.conv_pre_look_right}
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.CausalConvRNNF0Predictor
        num_class: {h.f0_num_class}
        in_channels: {h.f0_in_channels}
        cond_channels: {h.f0_cond_channels}

get_tokenizer: !name:cosyvoice.tokenizer.tokenizer.get_qwen_tokenizer
    token_path: !ref <qwen_pretrain_path>
    skip_special_tokens: True
    version: cosyvoice3
allowed_special: 'all'
feat_extractor: !name:matcha.utils.audio.mel_spectrogram
    n_fft: {m.n_fft}
    num_mels: {m.num_mels}
    sampling_rate: !ref <sample_rate>
    hop_size: {m.hop_size}
    win_size: {m.win_size}
    fmin: {m.fmin:g}
    fmax: {'null' if m.fmax is None else m.fmax}
    center: {m.center}
"""


def qwen_config_json(q: Qwen2Config) -> dict:
    """The `CosyVoice-BlankEN/config.json` content for `q` (Hugging Face Qwen2 format)."""
    return {
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
        "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu",
        "hidden_size": q.hidden_size, "initializer_range": 0.02, "intermediate_size": q.intermediate_size,
        "max_position_embeddings": q.max_position_embeddings, "max_window_layers": q.num_hidden_layers,
        "model_type": "qwen2", "num_attention_heads": q.num_attention_heads,
        "num_hidden_layers": q.num_hidden_layers, "num_key_value_heads": q.num_key_value_heads,
        "rms_norm_eps": q.rms_norm_eps, "rope_scaling": None, "rope_theta": q.rope_theta,
        "sliding_window": q.max_position_embeddings, "tie_word_embeddings": q.tie_word_embeddings,
        "torch_dtype": "float32", "use_cache": True, "use_sliding_window": False, "vocab_size": q.vocab_size,
    }
