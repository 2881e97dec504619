"""The per-request speech-token loop of the LLM, one step at a time.

Owns the rules around the model call: the first step is a prefill of the whole prompt, every
later step feeds the previous token; length limits (min_len = int(2 * n_text), max_len =
int(20 * n_text), n_text = tts text tokens without the prompt text); stop ids (every id >=
speech_token_size, never emitted); the silent-token trimming of the official model wrapper;
the benchmark switch `forced_tokens`; per-request randomness (a `torch.Generator` owned by the
decoder, seeded by the caller). The scheduler calls `step()` round-robin over requests.

`lm` is anything with the methods of `CosyVoice3LM` used here (`first_step_input`,
`new_cache`, `prefill`, `decode_one`, `logits`, plus `speech_token_size`, `speech_vocab_size`,
`device`), so an engine-backed step (CUDA graph, TensorRT) can stand in for the PyTorch module.

Min-length rule. The official loop masks only id speech_token_size (6561) before min_len.
For CosyVoice2 that id is eos; for CosyVoice3 it is sos, while eos is 6562 and all of
6561..6760 stop decoding, so the official code does not enforce the minimum length at all
(reference section 4.5). `min_len_rule="official"` reproduces that (the golden check needs
it); the default `"all_stop_ids"` masks every stop id before min_len, in the nucleus draw and
in the RAS full-distribution fallback alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import LLMConfig
from .errors import BadInputError, EmptyTextError, TooLongError
from .sampling import empty_recent, greedy, push_recent, ras_sample

ENDOFPROMPT_ID = 151646
SILENT_TOKENS = frozenset({1, 2, 28, 29, 55, 248, 494, 2241, 2242, 2322, 2323})
MAX_SILENT_RUN = 5
MIN_LEN_RULES = ("all_stop_ids", "official")


class SilenceTrimmer:
    """Drops silent tokens beyond the first MAX_SILENT_RUN of a consecutive run (reference 4.6)."""

    def __init__(self, silent_tokens=SILENT_TOKENS, max_run: int = MAX_SILENT_RUN):
        self.silent_tokens = silent_tokens
        self.max_run = max_run
        self.run = 0

    def keep(self, token: int) -> bool:
        if token not in self.silent_tokens:
            self.run = 0
            return True
        self.run += 1
        return self.run <= self.max_run


@dataclass
class StepTrace:
    """What one step saw: hidden (D,) entering the head, logits (V,) float32, the chosen id."""

    hidden: torch.Tensor
    logits: torch.Tensor
    token: int


class SpeechTokenDecoder:
    """Generates the speech tokens of one text segment.

    lm: a `CosyVoice3LM` (or a stand-in with the same methods);
    text_ids: tts text token ids of this segment (they define the length limits);
    prompt_text_ids: prompt text ids (zero-shot transcript with its system prompt, or the
        instruction); prompt_speech_tokens: the prompt's speech tokens (zero-shot only);
    seed: seeds this decoder's own `torch.Generator` on the model's device;
    config: sampling parameters and length ratios (defaults = the released model's);
    greedy: argmax instead of RAS sampling;
    min_len_rule: "all_stop_ids" (fixed, default) or "official" (see the module docstring);
    forced_tokens: benchmark mode: stop ids are masked until exactly this many tokens are
        emitted, then decoding stops; min/max length do not apply, and silent tokens are not
        trimmed (the emitted count must be exact);
    trace: keep a `StepTrace` per step in `self.trace` (for the golden check).

    After construction: `step()` until `finished`; `tokens` holds the emitted tokens,
    `generated` every token the LLM produced (the model conditions on these).
    """

    def __init__(self, lm, text_ids, prompt_text_ids=(), prompt_speech_tokens=(), *, seed: int = 0,
                 config: LLMConfig | None = None, greedy: bool = False, min_len_rule: str = "all_stop_ids",
                 forced_tokens: int | None = None, trace: bool = False):
        if min_len_rule not in MIN_LEN_RULES:
            raise ValueError(f"min_len_rule must be one of {MIN_LEN_RULES}, got {min_len_rule!r}")
        if forced_tokens is not None and forced_tokens < 0:
            raise ValueError(f"forced_tokens must be >= 0, got {forced_tokens}")
        self.lm = lm
        self.config = config or LLMConfig()
        self.greedy = greedy
        self.min_len_rule = min_len_rule
        self.forced_tokens = forced_tokens

        text_ids, prompt_text_ids = list(map(int, text_ids)), list(map(int, prompt_text_ids))
        if not text_ids and forced_tokens is None:
            raise EmptyTextError("no text tokens to synthesise")
        if ENDOFPROMPT_ID not in prompt_text_ids + text_ids:
            raise BadInputError("the LLM text lacks <|endofprompt|> (CosyVoice3 needs the system prompt)")
        self.n_text = len(text_ids)
        self.min_len = int(self.n_text * self.config.min_token_text_ratio)
        self.max_len = int(self.n_text * self.config.max_token_text_ratio)
        self.step_limit = forced_tokens if forced_tokens is not None else self.max_len

        self._lm_input = lm.first_step_input(prompt_text_ids, text_ids, prompt_speech_tokens)  # (1, L, D)
        self.prompt_len = self._lm_input.shape[1]
        cache_len = self.prompt_len + self.step_limit
        max_positions = getattr(getattr(lm, "qwen_config", None), "max_position_embeddings", None)
        if max_positions is not None and cache_len > max_positions:
            raise TooLongError(f"prompt ({self.prompt_len}) + max speech tokens ({self.step_limit}) exceed the "
                               f"LLM's {max_positions} positions")
        self.cache = lm.new_cache(cache_len)

        device = lm.device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        vocab = torch.arange(lm.speech_vocab_size, device=device)
        self._all_stop_mask = vocab >= lm.speech_token_size
        self._min_len_mask = self._all_stop_mask if min_len_rule == "all_stop_ids" else vocab == lm.speech_token_size
        self._recent = empty_recent(1, self.config.sampling.win_size, device)
        self._position = torch.full((1,), self.prompt_len, dtype=torch.long, device=device)
        self._last = None  # (1,) long, the token to feed next

        self._trimmer = SilenceTrimmer()
        self.tokens: list[int] = []
        self.generated: list[int] = []
        self.trace: list[StepTrace] | None = [] if trace else None
        self.n_steps = 0
        self.stop_reason: str | None = None
        self.finished = self.step_limit == 0
        if self.finished:
            self.stop_reason = "forced" if forced_tokens is not None else "max_len"

    def step(self) -> list[int]:
        """Advance one LLM step (the prefill on the first call). Returns the tokens emitted by
        this step: [] or [token]. After the last step `finished` is True."""
        if self.finished:
            return []
        with torch.inference_mode():
            if self._last is None:
                hidden = self.lm.prefill(self._lm_input, self.cache)
            else:
                hidden = self.lm.decode_one(self._last, self._position, self.cache)
                self._position += 1
            logits = self.lm.logits(hidden)  # (1, V) float32
            logp = logits.log_softmax(dim=-1)
            mask = self._step_mask()
            if mask is not None:
                logp = logp.masked_fill(mask, float("-inf"))
            if self.greedy:
                chosen = greedy(logp)
            else:
                s = self.config.sampling
                chosen = ras_sample(logp, self._recent, self.generator, s.top_p, s.top_k, s.win_size, s.tau_r)
            token = int(chosen[0])  # the one host sync of a step
            if self.trace is not None:
                self.trace.append(StepTrace(hidden[0].float().cpu(), logits[0].cpu(), token))
        self.n_steps += 1
        return self._accept(token, chosen)

    def run(self) -> list[int]:
        """Step until finished; returns all emitted tokens."""
        while not self.finished:
            self.step()
        return self.tokens

    def _step_mask(self) -> torch.Tensor | None:
        """Ids that may not be chosen at this step (None = all allowed)."""
        if self.forced_tokens is not None:
            return self._all_stop_mask
        if len(self.generated) < self.min_len:
            return self._min_len_mask
        return None

    def _accept(self, token: int, chosen: torch.Tensor) -> list[int]:
        if token >= self.lm.speech_token_size:
            self.finished, self.stop_reason = True, "stop_token"
            return []
        self.generated.append(token)
        self._last = chosen
        self._recent = push_recent(self._recent, chosen)
        emitted = [token] if self.forced_tokens is not None or self._trimmer.keep(token) else []
        self.tokens.extend(emitted)
        if len(self.generated) >= self.step_limit:
            self.finished = True
            self.stop_reason = "forced" if self.forced_tokens is not None else "max_len"
        return emitted
