"""Speech tokens for many text segments at once: KV-cache rows, per-row device state, one step.

A `TokenBatch` owns a KV cache of `rows` rows x `max_len` positions and the decoding state of
every row, on the model's device. Segments *join* (their prompts are prefilled together, each
into a free row, and their first tokens chosen; a stored prompt prefix is copied in and only the
rest prefilled, `prefix_store`), *step* together (one decode position plus the sampling for
every active row; several steps may go to the device before their tokens are read back, once:
`step(count)`), and *leave* (a finished or cancelled segment frees its row at
once). Active rows stay packed at the front (0..n-1): a segment that leaves is replaced by the
last active row, whose cache positions and state are copied over, so a step always works on
rows[:n], and attention reads the first S cache slots only, S just above the longest active row
(rounded up by the backend), never the whole reserved length.

What runs a step is a backend (`cosyvoice3.backends.DecodeSteps`): the PyTorch default
(`TorchDecodeSteps`, here beside it) runs `decode_rows` eagerly; engines/ captures the very same function in CUDA graphs per (rows, slots)
bucket. Either way a step is the model step and the sampling together, with no host sync until
the chosen tokens are read (one `.tolist()` per step for the whole batch).

Rules of a segment (reference 4.5/4.6), applied per row: min_len = int(2 * n_text) and max_len =
int(20 * n_text) speech tokens (n_text = tts text tokens, prompt text excluded); every id >=
speech_token_size stops decoding and is never emitted; stop ids are banned until min_len tokens
are chosen (`min_len_rule="all_stop_ids"`, the default; the official code bans only id 6561,
which in CosyVoice3 is sos, not eos - `"official"` reproduces that for the golden check); silent
tokens beyond a run of 5 are dropped (the official model wrapper's rule); `forced_tokens`
(benchmarks) bans stop ids until exactly that many tokens are emitted, without trimming.
Randomness is per row and counter-based (`cosyvoice3.decoding.sampling`): a segment's tokens do
not depend on what else is in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable

import torch

from cosyvoice3.config import LLMConfig, SamplingConfig
from cosyvoice3.errors import BadInputError, EmptyTextError, TooLongError

from .prefix_store import Prefix, PrefixStore
from .sampling import empty_recent, push_recent, ras_sample

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
class SegmentSpec:
    """What a text segment brings to the batch.

    prompt_ids / text_ids: LLM text token ids (prompt text with its system prompt or the
    instruction; the tts text of this segment: it defines the length limits); speech_tokens:
    the prompt's speech tokens (zero-shot only); key: the segment's random stream (63 bits);
    greedy: argmax instead of RAS; forced_tokens, min_len_rule: see the module docstring.
    """

    prompt_ids: list[int]
    text_ids: list[int]
    speech_tokens: list[int] = field(default_factory=list)
    key: int = 0
    greedy: bool = False
    forced_tokens: int | None = None
    min_len_rule: str = "all_stop_ids"


class SegmentRules:
    """The host side of one segment's decoding: limits, stop, trimming, what was emitted."""

    def __init__(self, spec: SegmentSpec, config: LLMConfig, speech_token_size: int, max_tokens: int | None = None):
        """max_tokens: the most speech tokens the segment's row has room for (its max_len is cut
        to it: the cap of 20 tokens per text token is a safety limit, far above real speech)."""
        if spec.min_len_rule not in MIN_LEN_RULES:
            raise ValueError(f"min_len_rule must be one of {MIN_LEN_RULES}, got {spec.min_len_rule!r}")
        if spec.forced_tokens is not None and spec.forced_tokens < 0:
            raise ValueError(f"forced_tokens must be >= 0, got {spec.forced_tokens}")
        if not spec.text_ids and spec.forced_tokens is None:
            raise EmptyTextError("no text tokens to synthesise")
        if ENDOFPROMPT_ID not in list(spec.prompt_ids) + list(spec.text_ids):
            raise BadInputError("the LLM text lacks <|endofprompt|> (CosyVoice3 needs the system prompt)")
        self.speech_token_size = speech_token_size
        self.forced = spec.forced_tokens
        self.n_text = len(spec.text_ids)
        self.min_len = int(self.n_text * config.min_token_text_ratio)
        self.max_len = int(self.n_text * config.max_token_text_ratio)
        if max_tokens is not None and self.forced is None:
            self.max_len = max(0, min(self.max_len, max_tokens))
        self.step_limit = self.forced if self.forced is not None else self.max_len
        self.ban_until = self.forced if self.forced is not None else self.min_len
        self.trimmer = SilenceTrimmer()
        self.generated: list[int] = []  # every token the LLM chose (it conditions on these)
        self.tokens: list[int] = []  # the emitted ones
        self.stop_reason: str | None = None
        if self.step_limit == 0:
            self.stop_reason = "forced" if self.forced is not None else "max_len"

    @property
    def finished(self) -> bool:
        return self.stop_reason is not None

    def accept(self, token: int) -> list[int]:
        """The tokens that `token` emits ([] or [token]); sets `stop_reason` at the end."""
        if self.finished:
            return []
        if token >= self.speech_token_size:
            self.stop_reason = "stop_token"
            return []
        self.generated.append(token)
        emitted = [token] if self.forced is not None or self.trimmer.keep(token) else []
        self.tokens.extend(emitted)
        if len(self.generated) >= self.step_limit:
            self.stop_reason = "forced" if self.forced is not None else "max_len"
        return emitted


@dataclass
class DecodeState:
    """What a decode step reads and updates, per row, on the device (static shapes).

    token: (R,) long, the last chosen token (fed at the next step); position: (R,) long, its
    position; recent: (R, W) long, the last emitted tokens (RAS window); count: (R,) long, tokens
    chosen so far (also the counter of the row's random stream); ban_until: (R,) long and ban:
    (R, V) bool - the ids in `ban` cannot be chosen while count < ban_until; key: (R,) long, the
    row's random stream; greedy: (R,) bool, argmax instead of RAS.
    """

    token: torch.Tensor
    position: torch.Tensor
    recent: torch.Tensor
    count: torch.Tensor
    ban_until: torch.Tensor
    ban: torch.Tensor
    key: torch.Tensor
    greedy: torch.Tensor

    FIELDS = ("token", "position", "recent", "count", "ban_until", "ban", "key", "greedy")

    @classmethod
    def allocate(cls, rows: int, vocab: int, win_size: int, device) -> "DecodeState":
        def longs():
            return torch.zeros(rows, dtype=torch.long, device=device)

        return cls(longs(), longs(), empty_recent(rows, win_size, device), longs(), longs(),
                   torch.zeros(rows, vocab, dtype=torch.bool, device=device), longs(),
                   torch.zeros(rows, dtype=torch.bool, device=device))

    def move_row(self, source: int, target: int) -> None:
        for name in self.FIELDS:
            tensor = getattr(self, name)
            tensor[target] = tensor[source]


def choose(logp: torch.Tensor, state: DecodeState, start: int, stop: int, sampling: SamplingConfig) -> torch.Tensor:
    """Choose a token for rows start..stop-1 from logp (stop - start, V); records it in `state`
    (token, recent, count), writing only once everything is computed. Returns (stop - start,) long."""
    rows = slice(start, stop)
    banned = state.ban[rows] & (state.count[rows] < state.ban_until[rows])[:, None]
    logp = logp.masked_fill(banned, float("-inf"))
    drawn = ras_sample(logp, state.recent[rows], state.key[rows], state.count[rows], sampling.top_p,
                       sampling.top_k, sampling.win_size, sampling.tau_r)
    chosen = torch.where(state.greedy[rows], logp.argmax(dim=-1), drawn)
    recent = push_recent(state.recent[rows], chosen)
    state.token[rows] = chosen
    state.recent[rows] = recent
    state.count[rows] += 1
    return chosen


def decode_rows(lm, cache, state: DecodeState, start: int, stop: int, n_slots: int,
                sampling: SamplingConfig) -> torch.Tensor:
    """One decode step for rows start..stop-1: feed each row's last token at its position, attend
    over the first `n_slots` cache slots, choose the next token. No host sync: capturable as a
    CUDA graph. Rows that are not in use may take part (graph buckets): their positions are
    clamped into the cache, and whatever they write stays in their own rows. The state is written
    at the end only, so a step that fails half-way can be run again (its K/V writes are the
    same). `lm` may be a step model with a `choose(hidden, state, start, stop, sampling)` of its
    own (engines.llm_fused: fused kernels), equal to `choose(lm.logprobs(hidden), ...)`.
    Returns (stop - start,) long."""
    rows = slice(start, stop)
    positions = state.position[rows].clamp(max=cache.max_len - 1)
    hidden = lm.decode_one(state.token[rows], positions, cache.rows(start, stop), kv_len=n_slots)
    own_choice = getattr(lm, "choose", None)
    if own_choice is not None:
        chosen = own_choice(hidden, state, start, stop, sampling)
    else:
        chosen = choose(lm.logprobs(hidden), state, start, stop, sampling)
    state.position[rows] += 1
    return chosen


class TorchDecodeSteps:
    """Eager PyTorch prefill and decode steps on the LM itself (CPU, and the reference)."""

    continues_prefix = True

    def __init__(self, lm):
        self.lm = lm

    def prefill(self, embeds, lengths, cache, start=None):
        return self.lm.prefill(embeds, cache, lengths, start=start)

    def decode(self, cache, state, n, n_slots, sampling):
        return decode_rows(self.lm, cache, state, 0, n, n_slots, sampling)

    def warm(self, cache, state, sampling) -> None:
        pass

    def describe(self) -> str:
        return "eager PyTorch (batched decode + sampling)"


@dataclass
class TokenEvent:
    """What a join or a step did for one segment: the tokens it emitted ([] or [t]), and its
    rules (all its tokens so far; `rules.finished` once it stopped and left the batch)."""

    owner: Hashable
    emitted: list[int]
    rules: SegmentRules

    @property
    def finished(self) -> bool:
        return self.rules.finished


@dataclass
class StepTrace:
    """What one step of a traced row saw: hidden (D,) entering the head, logits (V,) float32
    (before any masking), the chosen id. Only the eager path traces (the golden check)."""

    hidden: torch.Tensor
    logits: torch.Tensor
    token: int


class TokenBatch:
    """Rows of concurrently decoding segments.

    lm: a `CosyVoice3LM`; config: its LLMConfig (sampling, length ratios); rows: how many segments
    can decode at once; max_len: cache positions per row (prompt + speech tokens of a segment);
    steps: the backend that runs prefill and decode steps (`cosyvoice3.backends.DecodeSteps`;
    None = eager PyTorch; its `lm`, maybe a copy in another precision, is the one used here);
    trace: keep a `StepTrace` per step of every row in `traces` (eager steps, for the golden
    check); initial_rows: rows allocated at first - the cache grows (doubling, up to `rows`) when
    more segments join, so a worker serving one voice holds the memory of a few rows only;
    prefixes: where the keys/values of prompt prefixes are kept between joins (`prefix_store`;
    None: every join prefills every position). It is used only with a backend whose prefill
    continues a prefix (`continues_prefix`).
    """

    def __init__(self, lm, config: LLMConfig, rows: int, max_len: int, steps=None, trace: bool = False,
                 initial_rows: int = 8, prefixes: PrefixStore | None = None):
        if rows < 1 or max_len < 2:
            raise ValueError(f"a token batch needs rows >= 1 and max_len >= 2, got {rows}, {max_len}")
        self.steps = steps if steps is not None else TorchDecodeSteps(lm)
        self.lm, self.config = self.steps.lm, config
        self.max_rows, self.max_len = rows, max_len
        self.cache = None
        self.state: DecodeState | None = None
        self._allocate(min(rows, max(1, initial_rows)))
        self._stop_ids = torch.arange(self.lm.speech_vocab_size, device=self.lm.device) >= self.lm.speech_token_size
        self._owners: list[Hashable] = []  # row -> owner, rows 0..n-1
        self._rules: list[SegmentRules] = []
        self._next_pos: list[int] = []  # row -> position of the token it feeds next (host copy)
        self.trace = trace
        self.traces: dict[Hashable, list[StepTrace]] = {}
        self.steps_run = 0
        self.prefixes = prefixes if prefixes is not None else PrefixStore(0)
        self._use_prefixes = self.prefixes.enabled and getattr(self.steps, "continues_prefix", False)

    def _allocate(self, rows: int) -> None:
        """(Re)allocate cache and state for `rows` rows, keeping the active rows."""
        lm = self.lm
        cache = lm.new_cache(self.max_len, batch=rows)
        state = DecodeState.allocate(rows, lm.speech_vocab_size, self.config.sampling.win_size, lm.device)
        if self.cache is not None:
            n = self.active
            cache.k[:, :n].copy_(self.cache.k[:, :n])
            cache.v[:, :n].copy_(self.cache.v[:, :n])
            for name in DecodeState.FIELDS:
                getattr(state, name)[:n] = getattr(self.state, name)[:n]
        self.cache, self.state = cache, state
        self.capacity = rows

    def warm(self) -> None:
        """Let the decode backend prepare for this batch (CUDA graphs: capture every bucket)."""
        self.steps.warm(self.cache, self.state, self.config.sampling)

    # ------------------------------------------------------------------ queries

    @property
    def active(self) -> int:
        return len(self._owners)

    @property
    def free(self) -> int:
        """Rows a join can still take (the cache grows to make room, up to `max_rows`)."""
        return self.max_rows - self.active

    def __contains__(self, owner) -> bool:
        return owner in self._owners

    @property
    def owners(self) -> list[Hashable]:
        """The owner of each active row, row 0 first."""
        return list(self._owners)

    def slots_needed(self, start: int = 0, stop: int | None = None) -> int:
        """Cache slots the next step of rows start..stop-1 attends over."""
        return max(self._next_pos[start:stop]) + 1

    @staticmethod
    def prompt_length(spec: SegmentSpec) -> int:
        """LLM positions of a segment's prefill: sos, prompt text, tts text, task id, prompt speech."""
        return 2 + len(spec.prompt_ids) + len(spec.text_ids) + len(spec.speech_tokens)

    def rules_for(self, spec: SegmentSpec) -> SegmentRules:
        """The segment's rules, its speech tokens capped by the room left in a row."""
        return SegmentRules(spec, self.config, self.lm.speech_token_size,
                            max_tokens=self.max_len - self.prompt_length(spec))

    def check(self, spec: SegmentSpec) -> None:
        """Raise (a clear, per-request error) when the segment can never run in this batch."""
        prompt_len = self.prompt_length(spec)
        rules = self.rules_for(spec)
        limit = min(self.max_len, getattr(self.lm.qwen_config, "max_position_embeddings", self.max_len))
        if prompt_len + max(1, rules.step_limit) > limit:
            raise TooLongError(f"the prompt and text of this segment need {prompt_len + rules.step_limit} LLM "
                               f"positions; the limit is {limit} (use a shorter prompt or text)")

    # ------------------------------------------------------------------ join / step / leave

    def join(self, items: list[tuple[Hashable, SegmentSpec]]) -> list[TokenEvent]:
        """Prefill the segments together into free rows and choose their first tokens."""
        if not items:
            return []
        if len(items) > self.free:
            raise ValueError(f"{len(items)} segments cannot join: {self.free} rows are free")
        for _, spec in items:
            self.check(spec)
        rules = [self.rules_for(spec) for _, spec in items]
        if self.active + len(items) > self.capacity:
            self._grow(self.active + len(items))
        lm, state = self.lm, self.state
        with torch.inference_mode():
            start, stop = self.active, self.active + len(items)
            embeds = [lm.first_step_input(s.prompt_ids, s.text_ids, s.speech_tokens)[0] for _, s in items]
            lengths = [e.shape[0] for e in embeds]
            specs = [s for _, s in items]
            known = self._place_prefixes(specs, start)
            firsts = [p.length if p is not None else 0 for p in known]
            padded = torch.nn.utils.rnn.pad_sequence([e[f:] for e, f in zip(embeds, firsts)], batch_first=True)
            length_t = torch.tensor(lengths, dtype=torch.long, device=lm.device)
            rows_cache = self.cache.rows(start, stop)
            if any(firsts):
                first_t = torch.tensor(firsts, dtype=torch.long)
                hidden = self.steps.prefill(padded, length_t - first_t.to(lm.device), rows_cache, start=first_t)
            else:
                hidden = self.steps.prefill(padded, length_t, rows_cache)  # (k, D)
            self._keep_prefixes(specs, known, start)
            rows = slice(start, stop)
            state.token[rows] = 0
            state.position[rows] = length_t
            state.recent[rows] = empty_recent(len(items), self.config.sampling.win_size, lm.device)
            state.count[rows] = 0
            state.ban_until[rows] = torch.tensor([r.ban_until for r in rules], dtype=torch.long, device=lm.device)
            official = torch.tensor([s.min_len_rule == "official" and s.forced_tokens is None for _, s in items],
                                    device=lm.device)
            sos_only = torch.zeros_like(self._stop_ids)
            sos_only[lm.speech_token_size] = True
            state.ban[rows] = torch.where(official[:, None], sos_only, self._stop_ids)
            state.key[rows] = torch.tensor([s.key & (2**63 - 1) for _, s in items], dtype=torch.long,
                                           device=lm.device)
            state.greedy[rows] = torch.tensor([s.greedy for _, s in items], device=lm.device)
            logits = lm.logits(hidden)
            chosen = choose(logits.log_softmax(dim=-1), state, start, stop, self.config.sampling).tolist()
        for i, (owner, _) in enumerate(items):
            self._owners.append(owner)
            self._rules.append(rules[i])
            self._next_pos.append(lengths[i])
            if self.trace:
                self.traces[owner] = [StepTrace(hidden[i].float().cpu(), logits[i].cpu(), chosen[i])]
        return self._accept([None] * start + [[t] for t in chosen], advance=False)

    def _place_prefixes(self, specs: list[SegmentSpec], start: int) -> list[Prefix | None]:
        """Copy the stored prefix of each segment's prompt ids (if any) into its row, which
        starts at row `start`. Returns each segment's prefix, None where it has none."""
        if not self._use_prefixes:
            return [None] * len(specs)
        known = [self.prefixes.get(s.prompt_ids) if s.prompt_ids else None for s in specs]
        for i, prefix in enumerate(known):
            if prefix is not None:
                self.cache.k[:, start + i, :, :prefix.length].copy_(prefix.k)
                self.cache.v[:, start + i, :, :prefix.length].copy_(prefix.v)
        return known

    def _keep_prefixes(self, specs: list[SegmentSpec], known: list[Prefix | None], start: int) -> None:
        """Store the prefixes the prefill just computed (`prefix_store`: sos and the prompt ids)."""
        if not self._use_prefixes:
            return
        for i, (spec, prefix) in enumerate(zip(specs, known)):
            if prefix is None and spec.prompt_ids:
                n = 1 + len(spec.prompt_ids)
                self.prefixes.put(spec.prompt_ids, Prefix(self.cache.k[:, start + i, :, :n].clone(),
                                                          self.cache.v[:, start + i, :, :n].clone()))

    def step(self, count: int = 1) -> list[TokenEvent]:
        """`count` tokens for every active row, read back to the host once: the steps go to the
        device one after another without waiting for each other's tokens. A row that finishes
        on the way takes part in the rest of the steps (in its own row, which it then leaves);
        what they choose is dropped. Should a step fail (out of memory), the steps before it are
        kept and returned (a failed step changes no state: the next call runs it again); a
        first step that fails raises. Returns one event per row, with the tokens it emitted."""
        n = self.active
        if n == 0:
            return []
        if self.trace:
            return self._traced_steps(count)
        chosen = []
        with torch.inference_mode():
            for j in range(max(1, count)):
                n_slots = min(self.max_len, self.slots_needed() + j)
                try:
                    tokens = self.steps.decode(self.cache, self.state, n, n_slots, self.config.sampling)
                except Exception:
                    if not chosen:
                        raise
                    break
                chosen.append(tokens.clone() if count > 1 else tokens)  # a graph's output is rewritten by its next replay
            rows = torch.stack(chosen, dim=1).tolist()  # (n, steps)
        self.steps_run += len(chosen)
        return self._accept(rows, advance=True)

    def accept(self, chosen: list[int | None]) -> list[TokenEvent]:
        """Take the tokens a decode step chose for rows 0..len-1 (None: the row did not step);
        rows that finish leave. Returns one event per row that stepped."""
        return self._accept([None if t is None else [t] for t in chosen], advance=True)

    def _grow(self, rows: int) -> None:
        capacity = self.capacity
        while capacity < rows:
            capacity *= 2
        with torch.inference_mode():
            self._allocate(min(self.max_rows, capacity))

    def _traced_steps(self, count: int) -> list[TokenEvent]:
        """Eager steps that keep a trace, one at a time (rows leave as they finish)."""
        events = []
        for _ in range(max(1, count)):
            n = self.active
            if n == 0:
                break
            lm, state = self.lm, self.state
            with torch.inference_mode():
                hidden = lm.decode_one(state.token[:n], state.position[:n], self.cache.rows(0, n),
                                       kv_len=self.slots_needed())
                logits = lm.logits(hidden)
                chosen = choose(logits.log_softmax(dim=-1), state, 0, n, self.config.sampling).tolist()
                state.position[:n] += 1
            for row in range(n):
                self.traces[self._owners[row]].append(StepTrace(hidden[row].float().cpu(), logits[row].cpu(),
                                                                chosen[row]))
            self.steps_run += 1
            events += self.accept(chosen)
        return events

    def leave(self, owner) -> None:
        """Free the owner's row now (finished or cancelled); the last active row moves into it."""
        row = self._owners.index(owner)
        last = self.active - 1
        if row != last:
            with torch.inference_mode():
                self.cache.move_row(last, row, self._next_pos[last])
                self.state.move_row(last, row)
            self._owners[row], self._rules[row], self._next_pos[row] = (
                self._owners[last], self._rules[last], self._next_pos[last])
        del self._owners[last], self._rules[last], self._next_pos[last]

    def _accept(self, chosen: list[list[int] | None], advance: bool) -> list[TokenEvent]:
        """chosen[row]: the tokens the row's steps chose, in order (None: the row did not step)."""
        events, finished = [], []
        for row, tokens in enumerate(chosen):
            if tokens is None:
                continue
            if advance:
                self._next_pos[row] += len(tokens)
            owner, rules = self._owners[row], self._rules[row]
            emitted = [t for token in tokens for t in rules.accept(token)]  # nothing after its end
            events.append(TokenEvent(owner, emitted, rules))
            if rules.finished:
                finished.append(owner)
        for owner in finished:  # after the loop: leaving moves rows
            self.leave(owner)
        return events


def decode_alone(lm, config: LLMConfig, spec: SegmentSpec, trace: bool = False,
                 steps=None) -> tuple[SegmentRules, list[StepTrace]]:
    """Decode one segment by itself to the end (a batch of one). Returns its rules (tokens,
    generated, stop_reason) and, with `trace`, the trace of every step."""
    limit = SegmentRules(spec, config, lm.speech_token_size).step_limit
    batch = TokenBatch(lm, config, rows=1, max_len=TokenBatch.prompt_length(spec) + max(1, limit), steps=steps,
                       trace=trace)
    owner = "alone"
    rules = batch.join([(owner, spec)])[0].rules
    while owner in batch:
        batch.step()
    return rules, batch.traces.get(owner, [])
