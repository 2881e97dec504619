"""The loaded CosyVoice3 model: text + prepared prompt -> 24 kHz audio chunks.

`load_parts(model_dir)` reads an official model directory (or the demo one) into plain PyTorch
modules; `CosyVoice3(parts, backends)` is the model the worker serves, with whatever faster
backends engines/ built for it (`cosyvoice3.backends`; None = the modules' own PyTorch).
`CosyVoice3.from_pretrained` does both with the plain PyTorch backends.

What the model offers: `prepare_prompt` (audio + transcript -> a reusable `PreparedPrompt`),
`plan` / `plan_segments` / `llm_inputs` (the spec's validation, normalisation, splitting, the LLM
text of each mode), `engine(rows, max_len)` (a `BatchEngine` that serves many requests at once:
the worker uses it), and, for one request at a time, `start(request)` (a `SoloRun` whose `step()` returns the
audio chunks that became ready) and `synthesize()` (the same as a generator).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .backends import Backends
from .config import QWEN_DIR, ModelConfig, load_config
from .errors import ModelLoadError
from .features.onnx_models import SpeakerEncoder, SpeechTokenizer
from .features.prepare import prepare_prompt
from .frontend import prompt_format
from .frontend import text as text_frontend
from .frontend.prompt import PreparedPrompt
from .frontend.text_normalize import TextNormalizer
from .frontend.tokenizer import TextTokenizer
from .modes import Limits
from .nn.flow import CausalFlow, load_flow
from .nn.hift import CausalHiFT, load_hift
from .nn.llm import CosyVoice3LM, load_llm
from .nn.noise import FixedNoise
from .spec import SpeechSpec, check_spec
from .synthesis.engine import BatchEngine
from .synthesis.job import PromptTensors, SynthesisJob
from .synthesis.policy import Policy
from .synthesis.request import AudioChunk, SynthesisRequest, segment_seed  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

DEMO_MARKER = "cosyfast_demo.json"

ProgressFn = Callable[[str, float, str], None]


@dataclass
class ModelParts:
    """The modules of a model directory, in plain PyTorch (what engines/ builds backends from),
    and the text normaliser of the front end (wetext's grammars, shipped in the wheel)."""

    config: ModelConfig
    tokenizer: TextTokenizer
    llm: CosyVoice3LM
    flow: CausalFlow
    hift: CausalHiFT
    noise: FixedNoise
    model_dir: Path
    demo: bool
    device: torch.device
    dtype: torch.dtype
    text_normalizer: TextNormalizer

    @property
    def speaker_encoder_path(self) -> Path:
        return self.model_dir / "campplus.onnx"

    @property
    def speech_tokenizer_path(self) -> Path:
        return self.model_dir / "speech_tokenizer_v3.onnx"


def load_parts(model_dir: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               progress: ProgressFn | None = None) -> ModelParts:
    """Read an official model directory: config, tokenizer, llm.pt, flow.pt, hift.pt (HiFT in
    float32: its output is the audio; its F0 predictor in float64)."""
    model_dir = Path(model_dir)
    device = torch.device(device)
    report = progress or (lambda stage, fraction, message="": None)
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory not found: {model_dir}")
    report("loading", 0.0, "reading config")
    config = load_config(model_dir)
    tokenizer = TextTokenizer.from_dir(model_dir / QWEN_DIR)
    report("loading", 0.1, "loading llm.pt")
    llm = load_llm(model_dir / "llm.pt", config.llm, config.qwen, device, dtype)
    report("loading", 0.5, "loading flow.pt")
    flow = load_flow(model_dir / "flow.pt", config.flow, device, dtype)
    report("loading", 0.8, "loading hift.pt")
    noise = FixedNoise(config)
    hift = load_hift(model_dir / "hift.pt", config.hift, device, torch.float32, noise=noise)
    report("loading", 0.9, "loading the text normaliser")
    text_normalizer = TextNormalizer().load()  # wetext's grammars now, so the first request does not wait
    return ModelParts(config, tokenizer, llm, flow, hift, noise, model_dir, (model_dir / DEMO_MARKER).is_file(),
                      device, dtype, text_normalizer)


class CosyVoice3:
    """A loaded model: text front end, prompt front end, LLM, flow, HiFT, the fixed noise, and the
    backends that run its heavy parts."""

    def __init__(self, parts: ModelParts, backends: Backends | None = None, limits: Limits | None = None):
        self.parts = parts
        self.config, self.tokenizer, self.text_normalizer = parts.config, parts.tokenizer, parts.text_normalizer
        self.llm, self.flow, self.hift, self.noise = parts.llm, parts.flow, parts.hift, parts.noise
        self.device, self.dtype = parts.device, parts.dtype
        self.model_dir, self.demo = parts.model_dir, parts.demo
        self.backends = backends or Backends()
        self.limits = limits or Limits()
        self.sample_rate = self.config.sample_rate
        self.speaker_encoder = SpeakerEncoder(parts.speaker_encoder_path, runner=self.backends.speaker_session)
        self.speech_tokenizer = SpeechTokenizer(parts.speech_tokenizer_path,
                                                runner=self.backends.speech_tokenizer_session)
        self.report = self._report()
        self._solo_engine: BatchEngine | None = None

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, progress: ProgressFn | None = None,
                        limits: Limits | None = None) -> "CosyVoice3":
        """Load an official model directory with the plain PyTorch backends."""
        model = cls(load_parts(model_dir, device, dtype, progress), limits=limits)
        (progress or (lambda *a: None))("loading", 1.0, "ready")
        return model

    def _report(self) -> dict[str, dict]:
        """Per module: backend, precision, device, detail, reason (the engines' report where it
        has the module, plain PyTorch otherwise)."""
        plain = {name: {"backend": "torch", "precision": _dtype_name(self.dtype if name != "hift" else torch.float32),
                        "device": str(self.device), "detail": "eager", "reason": "plain PyTorch", "fallback": ""}
                 for name in ("llm", "llm_prefill", "flow", "hift")}
        for name in ("campplus", "speech_tokenizer"):
            plain[name] = {"backend": "onnxruntime", "precision": "fp32", "device": "cpu", "detail": "",
                           "reason": "official ONNX model", "fallback": ""}
        return {**plain, **self.backends.report}

    def info(self) -> dict:
        return {"device": str(self.device), "dtype": _dtype_name(self.dtype), "demo": self.demo,
                "sample_rate": self.sample_rate, "model_dir": str(self.model_dir or ""),
                "backends": self.report, "limits": self.limits.as_dict()}

    # ------------------------------------------------------------------ prompt

    def prepare_prompt(self, audio: np.ndarray, sample_rate: int, text: str = "",
                       truncate: bool = False) -> PreparedPrompt:
        """Prompt audio (float32 mono or (N, C)) + its transcript -> a reusable `PreparedPrompt`."""
        return prepare_prompt(audio, sample_rate, text, self.speaker_encoder, self.speech_tokenizer,
                              self.config.mel, truncate=truncate,
                              max_seconds=self.limits.max_prompt_seconds,
                              min_seconds=self.limits.min_prompt_seconds)

    # ------------------------------------------------------------------ planning

    def plan(self, request: SynthesisRequest) -> tuple[SpeechSpec, text_frontend.SegmentPlan]:
        """The request's spec checked by `check_spec` (a checked one comes back equal) and the plan
        of its text segments (read a block at a time: `SegmentPlan.step`, or at once: `finish`)."""
        spec = check_spec(request.spec, self.limits)
        return spec, text_frontend.SegmentPlan(spec.text, self.tokenizer, self.text_normalizer,
                                               normalize=spec.text_frontend)

    def plan_segments(self, request: SynthesisRequest) -> tuple[SpeechSpec, list[str]]:
        """The checked spec and its text segments, planned at once."""
        spec, plan = self.plan(request)
        return spec, plan.finish()

    def llm_inputs(self, spec: SpeechSpec, segment: str, prompt: PreparedPrompt):
        """Token ids for the LLM of one text segment of a checked spec: (prompt_text_ids,
        text_ids, prompt_speech_tokens or empty)."""
        # The transcript is used as typed (as the official front end does): it must match the audio.
        llm_text = prompt_format.format_llm_text(spec.mode, segment, spec.prompt_text, spec.instruction)
        prompt_ids = self.tokenizer.encode(llm_text.prompt_text) if llm_text.prompt_text else []
        text_ids = self.tokenizer.encode(llm_text.tts_text)
        speech = prompt.speech_tokens if llm_text.use_prompt_speech_tokens else np.zeros(0, np.int32)
        return prompt_ids, text_ids, speech

    # ------------------------------------------------------------------ one request's stages

    def prompt_tensors(self, prompt: PreparedPrompt) -> PromptTensors:
        return PromptTensors.of(prompt, self.device, self.dtype)

    def token2mel(self, tokens: torch.Tensor, prompt: PromptTensors, streaming: bool, finalize: bool) -> torch.Tensor:
        """Speech tokens (1, N) -> mel (1, 80, M) of the generated part, on the model's backends."""
        return self.flow.inference(tokens, prompt.tokens, prompt.mel, prompt.embedding, streaming=streaming,
                                   finalize=finalize, noise_source=self.noise, estimator=self.backends.estimator)

    def mel2wav(self, mel: torch.Tensor, finalize: bool) -> torch.Tensor:
        """Mel (1, 80, T) -> waveform (N,) float32, on the model's backends."""
        return self.hift.inference(mel.float(), finalize=finalize, stack=self.backends.vocoder)[0][0]

    # ------------------------------------------------------------------ synthesis

    def engine(self, rows: int, max_len: int, hook=None, flow_cache_bytes: int | None = None,
               prefix_cache_bytes: int | None = None) -> BatchEngine:
        """An engine serving up to `rows` decoding segments at once, `max_len` LLM positions each;
        flow_cache_bytes / prefix_cache_bytes: the budgets of the streaming flow cache and of the
        LLM's prompt prefixes (`BatchEngine`)."""
        return BatchEngine(self, rows, max_len, hook, flow_cache_bytes, prefix_cache_bytes)

    def start(self, request: SynthesisRequest) -> "SoloRun":
        """One request on an engine of one row (reused by the next solo run once this one is done,
        so backends that prepare per engine - CUDA graphs - prepare once)."""
        engine = self._solo_engine
        if engine is None or engine.jobs:
            engine = self.engine(rows=1, max_len=SOLO_MAX_LEN)
            if self._solo_engine is None:
                self._solo_engine = engine
        return SoloRun(self, request, engine)

    def synthesize(self, spec: SpeechSpec, prompt: PreparedPrompt,
                   forced_tokens: int | None = None) -> Iterator[np.ndarray]:
        """Generator of float32 audio chunks at 24 kHz (one per segment unless spec.stream)."""
        run = self.start(SynthesisRequest(spec, prompt, forced_tokens=forced_tokens))
        while not run.done:
            for chunk in run.step():
                yield chunk.pcm


SOLO_MAX_LEN = 4096  # LLM positions of a solo run's one row (prompt + speech tokens of a segment)


class SoloRun:
    """One request on a private engine of one row: `step()` does one round (join, decode step,
    audio) and returns the chunks that became ready; `done` when everything is out. Errors of the
    request are raised (from the constructor when the request is invalid)."""

    def __init__(self, model: CosyVoice3, request: SynthesisRequest, engine: BatchEngine):
        self.job = SynthesisJob(model, request)
        self.engine = engine
        self.engine.add(self.job)
        self.policy = Policy()

    @property
    def done(self) -> bool:
        return self.job.done

    @property
    def mode(self) -> str:
        return self.job.mode

    @property
    def segments(self) -> list[str]:
        return self.job.segments

    @property
    def stats(self) -> dict:
        return self.job.stats

    def step(self) -> list[AudioChunk]:
        if self.job.done:
            return []
        outcome = self.policy.run_once(self.engine)
        if outcome.failed:
            raise outcome.failed[0][1]
        chunks = [chunk for _, chunk in outcome.chunks]
        if self.job.done:
            self.engine.remove(self.job)
        return chunks

    def cancel(self) -> None:
        self.engine.cancel(self.job)


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))
