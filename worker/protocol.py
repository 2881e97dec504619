"""Messages between the app process and the GPU worker process.

Plain dataclasses, pickled over a `multiprocessing` pipe (spawn context). A synthesis request's
own fields are one `SpeechSpec` (cosyvoice3/spec.py) inside the `Synthesize` envelope. Audio travels as
float32 numpy arrays. Both sides import their wire types from this module only. Nothing in here
imports torch, so the app process stays free of CUDA.

Direction app -> worker: `Synthesize`, `PreparePrompt`, `Transcribe`, `Cancel`, `Shutdown`.
Direction worker -> app: `Ready`, `BootFailed`, `Progress`, `Chunk`, `PromptPrepared`,
`Transcript`, `Done`, `Failed`, `Heartbeat`, `Poisoned`. Log records do not travel here (see worker/logs.py).
`WorkerConfig` is what the worker process is started with.

Every request the app sends is answered by exactly one `Done` or `Failed` (a `PromptPrepared`
and a `Transcript` are followed by their `Done`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cosyvoice3.errors import CosyVoiceError
from cosyvoice3.frontend.prompt import PreparedPrompt
from cosyvoice3.spec import SpeechSpec
from cosyvoice3.synthesis.limits import PolicyLimits

# ---------------------------------------------------------------------------- error codes

BAD_INPUT = "bad_input"
TOO_LONG = "too_long"
OOM = "oom"
WORKER_CRASHED = "worker_crashed"
WORKER_HUNG = "worker_hung"
TIMEOUT = "timeout"
OVERLOADED = "overloaded"
CANCELLED = "cancelled"
INTERNAL = "internal"

ERROR_CODES = (BAD_INPUT, TOO_LONG, OOM, WORKER_CRASHED, WORKER_HUNG, TIMEOUT, OVERLOADED, CANCELLED, INTERNAL)

# Modes of synthesis (values, not display labels) and the request limits: owned by cosyvoice3.modes.
from cosyvoice3.modes import CROSS_LINGUAL, INSTRUCT, MODES, ZERO_SHOT, Limits  # noqa: E402,F401

# how a worker process that ends on its own says why (its exit status; worker/supervisor/process.py
# words them)
POISONED_EXIT = 3  # after an error its CUDA context does not survive (`Poisoned` sent first)
BOOT_FAILED_EXIT = 2  # after `BootFailed`

# ---------------------------------------------------------------------------- prompt data


# The prepared prompt type is shared with the model package (numpy only, no torch import).
PromptFeatures = PreparedPrompt


# ---------------------------------------------------------------------------- app -> worker


@dataclass
class Synthesize:
    """One synthesis request: the caller's `spec` (`cosyvoice3.spec.SpeechSpec`: text, mode,
    transcript, instruction, seed, speed, stream; built and checked where the request entered,
    carried unchanged into the model) in a transport envelope that holds no copy of its fields.

    The voice: exactly one of `prompt_audio` (float32 mono, with `prompt_sample_rate`) or `prompt`
    (already prepared features, e.g. from the voice library); its transcript is spec.prompt_text.
    `start_segment` / `skip_chunks` / `first_seq` are the resume point the supervisor sets after
    a worker restart: segments before `start_segment` are not synthesised again, the first
    `skip_chunks` chunks of `start_segment` are produced but not sent (they were delivered), and
    the first chunk sent has `seq` `first_seq`. `attempt` counts the times this request was started
    in a worker (0 = first); set by the supervisor. `timeout_s` overrides the supervisor's
    per-request deadline. `forced_tokens` (benchmarks) makes the LLM emit exactly that many speech
    tokens per segment. `fault` is a test-only fault injection spec (see worker/gpu/faults.py);
    None in production.
    """

    request_id: str
    spec: SpeechSpec
    prompt_audio: np.ndarray | None = None
    prompt_sample_rate: int = 0
    prompt: PromptFeatures | None = None
    start_segment: int = 0
    skip_chunks: int = 0
    first_seq: int = 0
    attempt: int = 0
    timeout_s: float | None = None
    forced_tokens: int | None = None
    fault: dict | None = None


@dataclass
class PreparePrompt:
    """Turn prompt audio (+ transcript) into `PromptFeatures` (answered by `PromptPrepared`)."""

    request_id: str
    audio: np.ndarray
    sample_rate: int
    text: str = ""
    attempt: int = 0
    timeout_s: float | None = None
    fault: dict | None = None


@dataclass
class Transcribe:
    """Transcribe prompt audio with the speech recogniser (answered by `Transcript`, then `Done`).

    The audio gets the checks of a voice prompt (an empty or silent clip fails as it would for
    synthesis). `language`: a hint ("auto", "zh", "en", "yue", "ja", "ko")."""

    request_id: str
    audio: np.ndarray
    sample_rate: int
    language: str = "auto"
    attempt: int = 0
    timeout_s: float | None = None
    fault: dict | None = None


@dataclass
class Cancel:
    request_id: str


@dataclass
class Shutdown:
    reason: str = ""


# ---------------------------------------------------------------------------- worker -> app


@dataclass
class Ready:
    """The worker has loaded the model. `info` holds device, per-module backends and reasons."""

    pid: int
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class BootFailed:
    """The worker could not load the model (bad model directory, ...). Not retried in a loop."""

    pid: int
    message: str
    code: str = INTERNAL


@dataclass
class Progress:
    """`request_id` is '' for worker-level progress (model loading, engine building). A request's
    stages: "started", "reading" (a long text read a block at a time before its audio starts; the
    message says "blocks read/blocks"), "synthesis", and the supervisor's "recovering", "retrying",
    "waking". `segments`: the request's number of text segments, on its "synthesis" progress (0
    elsewhere); segments done is `int(fraction * segments)`."""

    request_id: str
    stage: str
    fraction: float
    message: str = ""
    segments: int = 0


@dataclass
class Chunk:
    """A piece of audio. `seq` counts chunks of the whole request (0, 1, ...); `segment` and
    `index` locate it inside the text segments, for resuming after a restart. `text`: the text of
    its segment (as the model speaks it: normalised, one sentence) on the segment's first chunk
    (`index` 0), "" on the others - captions sum the samples of each segment's chunks."""

    request_id: str
    seq: int
    pcm: np.ndarray
    sample_rate: int
    segment: int = 0
    index: int = 0
    segment_final: bool = False
    text: str = ""


@dataclass
class PromptPrepared:
    request_id: str
    prompt: PromptFeatures


@dataclass
class Transcript:
    """What the recogniser heard. `language`: "zh", "en", "yue", "ja", "ko", "nospeech" or ""
    (none recognised); `text` is "" when no speech was recognised. `demo`: it came from the
    random demo recogniser (random text)."""

    request_id: str
    text: str
    language: str = ""
    emotion: str = ""
    event: str = ""
    demo: bool = False


@dataclass
class Done:
    """The request's end. stats: what the worker measured (rtf, first_chunk_s, ...) and, added by
    the supervisor that passed it on, `worker`: the worker that served it (name, pid, device,
    dtype, backends), which the page reports."""

    request_id: str
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Failed:
    """The request's end without audio. code: the closed set below; message: for logs and as a
    detail; reason + params: which rule refused it and its numbers (`cosyvoice3.errors`), for the
    web side's sentences (webui/messages.py)."""

    request_id: str
    code: str
    message: str
    retryable: bool = False
    reason: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, request_id: str, exc: CosyVoiceError) -> "Failed":
        """The answer to a request the package refused with `exc`."""
        return cls(request_id, exc.code, str(exc), reason=exc.reason, params=dict(exc.params))


@dataclass
class Heartbeat:
    """`batch`: the decode batch size now, its mean over the last minute and its maximum."""

    time: float = field(default_factory=time.time)
    busy: tuple = ()
    steps: int = 0
    gpu_memory: int = 0
    rss: int = 0
    pid: int = 0
    batch: dict = field(default_factory=dict)


@dataclass
class Poisoned:
    """The worker saw an error that its CUDA context does not survive (a second out-of-memory in
    a row, an illegal memory access, ...). It exits right after sending this; `cause` is the
    supervisor's restart cause ("oom" or "cuda_error")."""

    pid: int
    cause: str
    message: str = ""


# ---------------------------------------------------------------------------- process start


GPU_ROWS, CPU_ROWS = 64, 8  # decode rows of a worker without max_active (WorkerConfig.rows)


@dataclass
class WorkerConfig:
    """How the worker process boots. Picklable; passed to the spawned process.

    model_dir: a model directory, or None to resolve one (download cache, download, demo).
    demo: use the demo checkpoint. cache_dir: root of the model cache (None: the default).
    device: "cpu", "cuda", "cuda:1", or "auto" (CUDA when available). dtype: "auto" (the
    device's fast precision: `engines.model_dtype`), "float32", "float16" or "bfloat16". backend: "auto" | "tensorrt" | "onnxruntime" | "torch".
    llm_kernels: what the CUDA-graphed LLM decode step runs: "torch" (the module's own step) or
    "triton" (the fused step on Triton kernels, `engines.EngineConfig.llm_kernels`).
    heartbeat_s: seconds between heartbeats. max_active: text segments decoding at once (the
    token batch's rows; None = GPU_ROWS on a GPU, CPU_ROWS on the CPU: `rows`); more requests wait
    for a row.
    max_positions: LLM positions per row (prompt + speech tokens of one text segment).
    policy: the scheduling limits of one round (`cosyvoice3.synthesis.policy.PolicyLimits`).
    faults: accept the test-only `fault` field of requests (worker/gpu/faults.py).
    limits: the request limits (set from the app's flags); the model enforces them and the
    supervisor admits requests by the same object.
    asr: transcribe prompts on request (`Transcribe`); the recogniser loads on first use, from
    `asr_model_dir` when given, else the cache or a download (the demo recogniser with the demo
    model).
    """

    model_dir: str | None = None
    demo: bool = False
    cache_dir: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    backend: str = "auto"
    llm_kernels: str = "torch"
    heartbeat_s: float = 0.5
    max_active: int | None = None
    max_positions: int = 4096
    policy: PolicyLimits = field(default_factory=PolicyLimits)
    faults: bool = False
    log_level: int = 20
    limits: Limits = field(default_factory=Limits)
    asr: bool = True
    asr_model_dir: str | None = None

    def rows(self, cuda: bool) -> int:
        """The decode rows of a worker booted with this config (on a GPU when `cuda`)."""
        return self.max_active or (GPU_ROWS if cuda else CPU_ROWS)


ToWorker = Synthesize | PreparePrompt | Transcribe | Cancel | Shutdown
FromWorker = (Ready | BootFailed | Progress | Chunk | PromptPrepared | Transcript | Done | Failed | Heartbeat
              | Poisoned)
