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

Every step after the first is `sample_next`: decode one position, mask, draw, and update the
request's device-resident `DecodeState` in place - no host sync, so an engine can capture the
whole step (model + sampling) in one CUDA graph. An LM that offers `step_graphs` (engines/)
lends the decoder such a captured step; the loop is the same either way.

Min-length rule. The official loop masks only id speech_token_size (6561) before min_len.
For CosyVoice2 that id is eos; for CosyVoice3 it is sos, while eos is 6562 and all of
6561..6760 stop decoding, so the official code does not enforce the minimum length at all
(reference section 4.5). `min_len_rule="official"` reproduces that (the golden check needs
it); the default `"all_stop_ids"` masks every stop id before min_len, in the nucleus draw and
in the RAS full-distribution fallback alike.
"""

from __future__ import annotations

import weakref
from collections import deque
from dataclasses import dataclass

import torch

from cosyvoice3.config import LLMConfig
from cosyvoice3.errors import BadInputError, EmptyTextError, TooLongError

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


@dataclass
class DecodeState:
    """What a decode step reads and updates, all on the device (static shapes).

    token: (1,) long, the last chosen token (fed at the next step); position: (1,) long, its
    position; recent: (1, W) long, the last emitted tokens (RAS window); count: (1,) long, tokens
    chosen so far; ban_until: (1,) long and ban: (V,) bool - the ids in `ban` cannot be chosen
    while count < ban_until (min length, forced length).
    """

    token: torch.Tensor
    position: torch.Tensor
    recent: torch.Tensor
    count: torch.Tensor
    ban_until: torch.Tensor
    ban: torch.Tensor

    @classmethod
    def empty(cls, vocab: int, win_size: int, device) -> "DecodeState":
        def scalar():
            return torch.zeros(1, dtype=torch.long, device=device)

        return cls(scalar(), scalar(), empty_recent(1, win_size, device), scalar(), scalar(),
                   torch.zeros(vocab, dtype=torch.bool, device=device))

    def load(self, other: "DecodeState") -> None:
        """Copy `other`'s values into this state's tensors (a captured graph keeps its tensors)."""
        for name in ("token", "position", "recent", "count", "ban_until", "ban"):
            getattr(self, name).copy_(getattr(other, name))


def ban_step(logp: torch.Tensor, state: DecodeState) -> torch.Tensor:
    """Mask the banned ids of logp (1, V) while count < ban_until."""
    return logp.masked_fill(state.ban & (state.count < state.ban_until), float("-inf"))


def choose(logp: torch.Tensor, state: DecodeState, generator: torch.Generator, config: LLMConfig) -> torch.Tensor:
    """RAS draw from logp (1, V); records it in `state` (token, recent, count). Returns (1,) long."""
    s = config.sampling
    chosen = ras_sample(ban_step(logp, state), state.recent, generator, s.top_p, s.top_k, s.win_size, s.tau_r)
    state.token.copy_(chosen)
    state.recent.copy_(push_recent(state.recent, chosen))
    state.count.add_(1)
    return chosen


def sample_next(lm, cache, state: DecodeState, generator: torch.Generator, config: LLMConfig) -> torch.Tensor:
    """One decode step of `lm` fed state.token at state.position, then the RAS draw; `state` is
    updated in place. No host sync: the step can be captured in a CUDA graph."""
    hidden = lm.decode_one(state.token, state.position, cache)
    state.position.add_(1)
    return choose(lm.logprobs(hidden), state, generator, config)


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
        device = lm.device
        vocab = torch.arange(lm.speech_vocab_size, device=device)
        stop_ids = vocab >= lm.speech_token_size
        if forced_tokens is not None:  # no stop before exactly forced_tokens tokens
            ban, ban_until = stop_ids, forced_tokens
        else:
            ban = stop_ids if min_len_rule == "all_stop_ids" else vocab == lm.speech_token_size
            ban_until = self.min_len

        # An engine may lend a captured step (model + sampling in one CUDA graph) with its own cache.
        graphs = getattr(lm, "step_graphs", None)
        self._slot = graphs.acquire(cache_len) if graphs is not None and not greedy and not trace else None
        self._step_lm = lm  # the module that runs the steps (a slot may hold its own copy)
        if self._slot is not None:
            self.cache, self.state, self.generator = self._slot.cache, self._slot.state, self._slot.generator
            self._step_lm = self._slot.lm
            self._release = weakref.finalize(self, self._slot.release)
        else:
            self.cache = lm.new_cache(cache_len)
            self.state = DecodeState.empty(lm.speech_vocab_size, self.config.sampling.win_size, device)
            self.generator = torch.Generator(device=device)
            self._release = None
        self.generator.manual_seed(seed)
        self.state.load(DecodeState(
            token=torch.zeros(1, dtype=torch.long, device=device),
            position=torch.full((1,), self.prompt_len, dtype=torch.long, device=device),
            recent=empty_recent(1, self.config.sampling.win_size, device),
            count=torch.zeros(1, dtype=torch.long, device=device),
            ban_until=torch.full((1,), ban_until, dtype=torch.long, device=device), ban=ban))
        self._started = False
        self._pending: deque[int] = deque()  # tokens a lent step produced ahead

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
            if not self._started:
                self._started = True
                self._choose(self._step_lm.prefill(self._lm_input, self.cache))
                token = int(self.state.token[0])
            elif self._slot is not None:
                if not self._pending:  # a lent step hands over several tokens at once
                    self._pending.extend(self._slot.step())
                token = self._pending.popleft()
            else:
                if self.greedy or self.trace is not None:
                    hidden = self._step_lm.decode_one(self.state.token, self.state.position, self.cache)
                    self.state.position.add_(1)
                    self._choose(hidden)
                else:
                    sample_next(self._step_lm, self.cache, self.state, self.generator, self.config)
                token = int(self.state.token[0])  # the one host sync of a step
        self.n_steps += 1
        return self._accept(token)

    def _choose(self, hidden: torch.Tensor) -> None:
        """The eager choice of a token from hidden (1, D), with the trace when asked."""
        logits = self._step_lm.logits(hidden)  # (1, V) float32
        logp = logits.log_softmax(dim=-1)
        if self.greedy:
            chosen = greedy(ban_step(logp, self.state))
            self.state.token.copy_(chosen)
            self.state.recent.copy_(push_recent(self.state.recent, chosen))
            self.state.count.add_(1)
        else:
            choose(logp, self.state, self.generator, self.config)
        if self.trace is not None:
            self.trace.append(StepTrace(hidden[0].float().cpu(), logits[0].cpu(), int(self.state.token[0])))

    def run(self) -> list[int]:
        """Step until finished; returns all emitted tokens."""
        while not self.finished:
            self.step()
        return self.tokens

    def close(self) -> None:
        """Give a borrowed captured step back (also done when finished or garbage-collected)."""
        if self._release is not None:
            self._release()

    def _accept(self, token: int) -> list[int]:
        if token >= self.lm.speech_token_size:
            self.finished, self.stop_reason = True, "stop_token"
            self.close()
            return []
        self.generated.append(token)
        emitted = [token] if self.forced_tokens is not None or self._trimmer.keep(token) else []
        self.tokens.extend(emitted)
        if len(self.generated) >= self.step_limit:
            self.finished = True
            self.stop_reason = "forced" if self.forced_tokens is not None else "max_len"
            self.close()
        return emitted
