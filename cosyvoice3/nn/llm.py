"""The CosyVoice3 speech-token language model: Qwen2 body plus speech embedding and head.

Owns the module layout whose `state_dict` keys equal those of the official `llm.pt`
(`llm.model.model.*`, `llm.model.lm_head.weight`, `speech_embedding.weight`,
`llm_decoder.weight`), the assembly of the first-step input, and the three calls a decoding
loop needs: prefill, one decode step, log-probabilities. The loop itself (sampling, lengths,
stop ids) lives in `cosyvoice3.decoding.token_batch`.

Speech vocabulary (6761 ids = speech_token_size + 200): 0..6560 speech tokens, 6561 sos,
6562 eos, 6563 task_id, 6564 fill, the rest reserved; every id >= 6561 stops decoding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from cosyvoice3.checkpoint import load_strict, read_state_dict
from cosyvoice3.config import LLMConfig, Qwen2Config
from cosyvoice3.errors import BadInputError

from .qwen2 import KVCache, Qwen2ForCausalLM

N_SPECIAL_SPEECH_IDS = 200
LM_HEAD_KEY = "llm.model.lm_head.weight"
EMBED_KEY = "llm.model.model.embed_tokens.weight"


class Qwen2Encoder(nn.Module):
    """Holds the Qwen2 causal LM under the attribute names of the official wrapper (`llm.model`)."""

    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.model = Qwen2ForCausalLM(cfg)


class CosyVoice3LM(nn.Module):
    def __init__(self, llm_cfg: LLMConfig, qwen_cfg: Qwen2Config):
        super().__init__()
        if llm_cfg.input_size != qwen_cfg.hidden_size or llm_cfg.output_size != qwen_cfg.hidden_size:
            raise ValueError(f"LLM sizes {llm_cfg.input_size}/{llm_cfg.output_size} != Qwen2 hidden size "
                             f"{qwen_cfg.hidden_size}")
        self.config = llm_cfg
        self.qwen_config = qwen_cfg
        self.speech_token_size = llm_cfg.speech_token_size
        self.speech_vocab_size = llm_cfg.speech_token_size + N_SPECIAL_SPEECH_IDS
        self.sos_id = llm_cfg.speech_token_size
        self.eos_id = llm_cfg.speech_token_size + 1
        self.task_id = llm_cfg.speech_token_size + 2
        self.fill_id = llm_cfg.speech_token_size + 3

        self.llm = Qwen2Encoder(qwen_cfg)
        self.llm_decoder = nn.Linear(llm_cfg.output_size, self.speech_vocab_size, bias=False)
        self.speech_embedding = nn.Embedding(self.speech_vocab_size, llm_cfg.input_size)

    @property
    def body(self):
        """The Qwen2 stack (`llm.model.model`)."""
        return self.llm.model.model

    @property
    def device(self) -> torch.device:
        return self.llm_decoder.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.llm_decoder.weight.dtype

    def first_step_input(self, prompt_text_ids, text_ids, prompt_speech_tokens=()) -> torch.Tensor:
        """Build the prefill input `[sos] text_emb(prompt_text ++ text) [task_id] speech_emb(prompt speech)`.

        prompt_text_ids, text_ids: text token ids (sequence, numpy array or 1-D tensor);
        prompt_speech_tokens: prompt speech tokens 0..speech_token_size-1 (empty in
        cross-lingual/instruct mode). Returns (1, L, D) with L = 1 + n_text + 1 + n_speech.
        """
        text = _as_ids(prompt_text_ids, text_ids)
        speech = _as_ids(prompt_speech_tokens)
        _check_range(text, self.qwen_config.vocab_size, "text token")
        _check_range(speech, self.speech_token_size, "prompt speech token")
        table = self.speech_embedding.weight
        parts = [table[self.sos_id][None],
                 self.body.embed_tokens(text.to(self.device)),
                 table[self.task_id][None],
                 self.speech_embedding(speech.to(self.device))]
        return torch.cat(parts, dim=0)[None]

    def new_cache(self, max_len: int, batch: int = 1) -> KVCache:
        """A zeroed KV cache of `max_len` positions on this model's device and dtype."""
        return KVCache.allocate(self.qwen_config, max_len, batch, self.device, self.dtype)

    def prefill(self, inputs_embeds: torch.Tensor, cache: KVCache, lengths: torch.Tensor | None = None,
                start: torch.Tensor | None = None) -> torch.Tensor:
        """inputs_embeds: (B, T, D), row b holding its inputs at positions start[b]..start[b] +
        lengths[b] - 1 and padding after them (lengths None: every row is T long; start None: 0);
        cache: B rows, written at those positions, whose slots before start[b] already hold the
        keys/values of what precedes the row's inputs (a prompt prefix,
        `cosyvoice3.decoding.prefix_store`). The padding's keys land behind each row's end (in
        the last slot where they would pass the cache's end), where decoding overwrites them
        before any query can see them. start: a CPU tensor (its maximum sizes the attention).
        Returns the hidden state at each row's last position, (B, D)."""
        batch, length, _ = inputs_embeds.shape
        positions = torch.arange(length, device=self.device).expand(batch, length)
        kv_len = length
        if start is not None:
            kv_len = min(cache.max_len, int(start.max()) + length)
            positions = (positions + start.to(self.device)[:, None]).clamp(max=cache.max_len - 1)
        hidden = self.body(inputs_embeds.to(self.dtype), positions, cache.k, cache.v, kv_len=kv_len)
        if lengths is None:
            return hidden[:, -1]
        last = (lengths.to(self.device) - 1).clamp(min=0)
        return hidden[torch.arange(batch, device=self.device), last]

    def decode_one(self, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache,
                   kv_len: int | None = None) -> torch.Tensor:
        """One decode step. tokens: (B,) long speech ids fed as input; positions: (B,) long
        positions of these inputs; kv_len: attend over the first kv_len cache slots (every
        position must be below it; None = all). Static shapes, no host sync. Returns hidden (B, D)."""
        x = self.speech_embedding(tokens)[:, None]  # (B, 1, D)
        return self.body(x, positions[:, None], cache.k, cache.v, kv_len=kv_len)[:, 0]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (B, D) -> logits over the speech vocabulary, (B, 6761) float32."""
        return self.llm_decoder(hidden).float()

    def logprobs(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (B, D) -> log_softmax of the logits, (B, 6761) float32."""
        return self.logits(hidden).log_softmax(dim=-1)


def load_llm(path: str | Path, llm_cfg: LLMConfig, qwen_cfg: Qwen2Config, device="cpu",
             dtype: torch.dtype = torch.float32) -> CosyVoice3LM:
    """Build `CosyVoice3LM` without random init and load `llm.pt` strictly.

    The module is created on the meta device and allocated directly on `device` in `dtype`;
    file tensors are cast on copy. With tied embeddings a file that stores no separate
    `lm_head` tensor is accepted (the head is the embedding by definition).
    """
    with torch.device("meta"):
        model = CosyVoice3LM(llm_cfg, qwen_cfg)
    model = model.to(dtype=dtype).to_empty(device=device)
    state = read_state_dict(path)
    if qwen_cfg.tie_word_embeddings and LM_HEAD_KEY not in state and EMBED_KEY in state:
        state[LM_HEAD_KEY] = state[EMBED_KEY]
    load_strict(model, state, path)
    return model.eval().requires_grad_(False)


def _as_ids(*parts) -> torch.Tensor:
    """Concatenate id sequences (lists, numpy arrays, tensors) into a 1-D long CPU tensor."""
    arrays = [p.detach().cpu().reshape(-1).long() if isinstance(p, torch.Tensor)
              else torch.from_numpy(np.asarray(p, dtype=np.int64).reshape(-1)) for p in parts]
    return torch.cat(arrays) if arrays else torch.zeros(0, dtype=torch.long)


def _check_range(ids: torch.Tensor, limit: int, what: str) -> None:
    """Refuse ids outside [0, limit) on the host: on a GPU they would be a device-side assert."""
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= limit):
        raise BadInputError(f"{what} id out of range [0, {limit}): min {int(ids.min())}, max {int(ids.max())}")
