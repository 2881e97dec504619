"""The limits of one scheduling round (torch-free: the app process sets them from its flags)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PolicyLimits:
    """max_prefill_tokens: prompt tokens prefilled in one round (bounds how long the decoding
    requests wait for joining ones); decode_steps: decode steps per round, read back from the
    device once (fewer when others wait, `policy.py`); max_audio_works / max_audio_frames: chunk works and flow mel
    frames in one flow + vocoder batch; audio_slack_s: chunk works due later than this wait while
    there is decoding to do; coalesce_tokens / coalesce_max_s: a first chunk waits (at most that
    long) for other requests whose first chunk is that few tokens away, so they are made in one
    batch (`policy.py`); max_flow_solves: flow solves in flight at once (their ODE steps go
    on between decode steps, `policy.py`); flow_cache_mb: the streaming flow cache's budget in MiB (None: from the
    memory free once the model is loaded, see `engine.default_flow_cache_bytes`; 0: off); prefix_cache_mb: the
    LLM's prompt prefixes kept between requests (`cosyvoice3.decoding.prefix_store`; 0: off)."""

    max_prefill_tokens: int = 4096
    decode_steps: int = 1
    max_audio_works: int = 32
    max_audio_frames: int = 60000
    audio_slack_s: float = 0.5
    coalesce_tokens: int = 4
    coalesce_max_s: float = 0.05
    max_flow_solves: int = 2
    flow_cache_mb: int | None = None
    prefix_cache_mb: int = 64

    def __post_init__(self):
        for name in ("max_prefill_tokens", "decode_steps", "max_audio_works", "max_audio_frames", "max_flow_solves"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("flow_cache_mb", "prefix_cache_mb"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be 0 (off) or more, got {getattr(self, name)}")
