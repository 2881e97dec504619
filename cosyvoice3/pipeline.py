"""The CosyVoice3 pipeline: text + prepared prompt -> 24 kHz audio chunks.

`CosyVoice3.from_pretrained` loads an official model directory (or the demo one).
`start(request)` returns a `SynthesisJob` whose `step()` does one small unit of work - one LLM
token, or one flow + vocoder chunk - and returns the audio chunks that became ready, so a worker
can interleave many requests. `synthesize()` is the same job driven as a generator.

Per text segment: LLM speech tokens -> (streaming: whenever the hop schedule allows) flow mel ->
HiFT audio. Chunks are handed over the moment they exist; nothing polls. Segment `i` samples with
a generator seeded from (seed, i), so a request restarted at segment k reproduces the audio of the
uninterrupted run from k on.

Deviations from the official code, on purpose: the hop schedule is per request (the official one
leaks across requests); cross-lingual text is normalised and split before the system prompt is
added (the official marker check skips both); speed also applies in streaming mode (per chunk of
new mel frames; the official streaming path ignores it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from cosyvoice3.decoding.streaming import HopSchedule
from cosyvoice3.decoding.token_loop import SpeechTokenDecoder
from cosyvoice3.features.onnx_models import SpeakerEncoder, SpeechTokenizer
from cosyvoice3.features.prepare import prepare_prompt
from cosyvoice3.frontend import instructions, prompt_format
from cosyvoice3.frontend import text as text_frontend
from cosyvoice3.frontend.prompt import PreparedPrompt
from cosyvoice3.frontend.tokenizer import TextTokenizer
from cosyvoice3.nn.flow import CausalFlow, load_flow
from cosyvoice3.nn.hift import CausalHiFT, load_hift
from cosyvoice3.nn.llm import CosyVoice3LM, load_llm
from cosyvoice3.nn.noise import FixedNoise

from .config import QWEN_DIR, ModelConfig, load_config
from .errors import BadInputError, EmptyTextError, ModelLoadError
from .modes import INSTRUCT, MAX_SPEED, MIN_SPEED, MODES, ZERO_SHOT, Limits, effective_mode

log = logging.getLogger(__name__)

DEMO_MARKER = "cosyfast_demo.json"

ProgressFn = Callable[[str, float, str], None]


@dataclass
class SynthesisRequest:
    text: str
    prompt: PreparedPrompt
    mode: str = ZERO_SHOT
    instruction: str = ""
    seed: int = 0
    speed: float = 1.0
    stream: bool = True
    start_segment: int = 0
    forced_tokens: int | None = None


@dataclass
class AudioChunk:
    pcm: np.ndarray  # float32 (N,) at sample_rate
    sample_rate: int
    segment: int
    index: int
    segment_final: bool


def segment_seed(seed: int, segment: int) -> int:
    """Seed of one text segment's sampler, derived from the request seed and the segment index."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, segment]).generate_state(1, np.uint64)[0] >> 1)


class CosyVoice3:
    """A loaded model: text front end, prompt front end, LLM, flow, HiFT and the fixed noise."""

    def __init__(self, config: ModelConfig, tokenizer: TextTokenizer, llm: CosyVoice3LM, flow: CausalFlow,
                 hift: CausalHiFT, noise: FixedNoise, speaker_encoder: SpeakerEncoder,
                 speech_tokenizer: SpeechTokenizer, device: torch.device, dtype: torch.dtype,
                 model_dir: Path | None = None, demo: bool = False, limits: Limits | None = None):
        self.config, self.tokenizer = config, tokenizer
        self.llm, self.flow, self.hift, self.noise = llm, flow, hift, noise
        self.speaker_encoder, self.speech_tokenizer = speaker_encoder, speech_tokenizer
        self.device, self.dtype = device, dtype
        self.model_dir, self.demo = model_dir, demo
        self.limits = limits or Limits()
        self.sample_rate = config.sample_rate
        self.backends: dict[str, dict] = {
            name: {"backend": "torch", "precision": _dtype_name(dtype if name != "hift" else torch.float32),
                   "device": str(device), "reason": "plain PyTorch"}
            for name in ("llm", "flow", "hift")}
        for name in ("campplus", "speech_tokenizer"):
            self.backends[name] = {"backend": "onnxruntime", "precision": "fp32", "device": "cpu",
                                   "reason": "official ONNX model"}

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, backend: str = "torch",
                        progress: ProgressFn | None = None, limits: Limits | None = None) -> "CosyVoice3":
        """Load an official model directory. `backend` other than "torch" is handed to engines/."""
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
        report("loading", 0.9, "loading front-end models")
        speaker_encoder = SpeakerEncoder(model_dir / "campplus.onnx")
        speech_tokenizer = SpeechTokenizer(model_dir / "speech_tokenizer_v3.onnx")
        demo = (model_dir / DEMO_MARKER).is_file()
        model = cls(config, tokenizer, llm, flow, hift, noise, speaker_encoder, speech_tokenizer, device, dtype,
                    model_dir=model_dir, demo=demo, limits=limits)
        if backend != "torch":
            from engines import attach_engines  # engines/ is optional for the plain model

            attach_engines(model, backend=backend, progress=report)
        report("loading", 1.0, "ready")
        return model

    def info(self) -> dict:
        return {"device": str(self.device), "dtype": _dtype_name(self.dtype), "demo": self.demo,
                "sample_rate": self.sample_rate, "model_dir": str(self.model_dir or ""),
                "backends": self.backends, "limits": self.limits.as_dict()}

    # ------------------------------------------------------------------ prompt

    def prepare_prompt(self, audio: np.ndarray, sample_rate: int, text: str = "",
                       truncate: bool = False) -> PreparedPrompt:
        """Prompt audio (float32 mono or (N, C)) + its transcript -> a reusable `PreparedPrompt`."""
        return prepare_prompt(audio, sample_rate, text, self.speaker_encoder, self.speech_tokenizer,
                              self.config.mel, truncate=truncate,
                              max_seconds=self.limits.max_prompt_seconds,
                              min_seconds=self.limits.min_prompt_seconds)

    # ------------------------------------------------------------------ synthesis

    def start(self, request: SynthesisRequest) -> "SynthesisJob":
        return SynthesisJob(self, request)

    def synthesize(self, text: str, prompt: PreparedPrompt, mode: str = ZERO_SHOT, instruction: str = "",
                   seed: int = 0, speed: float = 1.0, stream: bool = False,
                   forced_tokens: int | None = None) -> Iterator[np.ndarray]:
        """Generator of float32 audio chunks at 24 kHz (one per segment when not streaming)."""
        job = self.start(SynthesisRequest(text, prompt, mode, instruction, seed, speed, stream,
                                          forced_tokens=forced_tokens))
        while not job.done:
            for chunk in job.step():
                yield chunk.pcm

    def plan_segments(self, request: SynthesisRequest) -> tuple[str, list[str]]:
        """Validate the request and return (effective mode, text segments)."""
        text = self.limits.check_text(request.text)
        if request.mode not in MODES:
            raise BadInputError(f"unknown mode {request.mode!r}; expected one of {', '.join(MODES)}")
        if not MIN_SPEED <= float(request.speed) <= MAX_SPEED:
            raise BadInputError(f"speed {request.speed} is outside {MIN_SPEED} .. {MAX_SPEED}")
        mode = effective_mode(request.mode, request.prompt.text)
        if mode == INSTRUCT:
            instructions.resolve_instruction(request.instruction)  # raises on an empty instruction
        segments = text_frontend.prepare_segments(text, self.tokenizer)
        if not segments:
            raise EmptyTextError("the text has nothing to speak (only punctuation or symbols)")
        return mode, segments

    def llm_inputs(self, mode: str, segment: str, prompt: PreparedPrompt, instruction: str):
        """Token ids for the LLM: (prompt_text_ids, text_ids, prompt_speech_tokens or empty)."""
        # The transcript is used as typed (as the official front end does): it must match the audio.
        llm_text = prompt_format.format_llm_text(mode, segment, prompt.text, instruction)
        prompt_ids = self.tokenizer.encode(llm_text.prompt_text) if llm_text.prompt_text else []
        text_ids = self.tokenizer.encode(llm_text.tts_text)
        speech = prompt.speech_tokens if llm_text.use_prompt_speech_tokens else np.zeros(0, np.int32)
        return prompt_ids, text_ids, speech

    # ------------------------------------------------------------------ token -> audio

    def token2mel(self, tokens: torch.Tensor, prompt: "_PromptTensors", streaming: bool,
                  finalize: bool) -> torch.Tensor:
        """Speech tokens (1, N) -> mel (1, 80, 2N or 2(N-3)) of the generated part."""
        return self.flow.inference(tokens, prompt.tokens, prompt.mel, prompt.embedding, streaming=streaming,
                                   finalize=finalize, noise_source=self.noise)

    def mel2wav(self, mel: torch.Tensor, finalize: bool) -> torch.Tensor:
        """Mel (1, 80, T) -> waveform (N,) float32 on the CPU."""
        speech, _ = self.hift.inference(mel.float(), finalize=finalize)
        return speech[0].float()


@dataclass
class _PromptTensors:
    tokens: torch.Tensor  # (1, P) long
    mel: torch.Tensor  # (1, 2P, 80)
    embedding: torch.Tensor  # (1, 192)

    @classmethod
    def of(cls, prompt: PreparedPrompt, device, dtype) -> "_PromptTensors":
        return cls(torch.from_numpy(prompt.speech_tokens.astype(np.int64))[None].to(device),
                   torch.from_numpy(prompt.mel)[None].to(device, dtype),
                   torch.from_numpy(prompt.embedding)[None].to(device, dtype))


class _SegmentSynth:
    """One text segment: the LLM token loop, then flow + HiFT (per chunk when streaming)."""

    def __init__(self, model: CosyVoice3, prompt: _PromptTensors, llm_ids, seed: int, stream: bool,
                 speed: float, forced_tokens: int | None):
        self.model, self.prompt, self.stream, self.speed = model, prompt, stream, speed
        prompt_ids, text_ids, speech = llm_ids
        self.decoder = SpeechTokenDecoder(model.llm, text_ids, prompt_ids, speech, seed=seed,
                                          config=model.config.llm, forced_tokens=forced_tokens)
        self.schedule = HopSchedule(n_prompt_tokens=prompt.tokens.shape[1])
        self.tokens: list[int] = []
        self.mel_parts: list[torch.Tensor] = []  # streaming: accumulated mel (1, 80, t) pieces
        self.samples_sent = 0
        self.done = False
        self.n_chunks = 0

    def step(self) -> list[tuple[np.ndarray, bool]]:
        """Advance by one unit; returns [(pcm, is_last_of_segment)] ready now (possibly empty)."""
        if self.done:
            return []
        if self.stream and self.schedule.ready(len(self.tokens)):
            return [self._stream_chunk(final=False)]
        if not self.decoder.finished:
            self.tokens.extend(self.decoder.step())
            return []
        self.done = True
        if self.stream:
            return [self._stream_chunk(final=True)]
        return [(self._whole(), True)]

    def _token_tensor(self, n: int) -> torch.Tensor:
        return torch.tensor(self.tokens[:n], dtype=torch.long, device=self.model.device)[None]

    def _whole(self) -> np.ndarray:
        if not self.tokens:
            return np.zeros(0, np.float32)
        mel = self.model.token2mel(self._token_tensor(len(self.tokens)), self.prompt, streaming=False, finalize=True)
        mel = _change_speed(mel, self.speed)
        return self.model.mel2wav(mel, finalize=True).cpu().numpy()

    def _stream_chunk(self, final: bool) -> tuple[np.ndarray, bool]:
        done_frames = 2 * self.schedule.offset
        if final:
            if len(self.tokens) > self.schedule.offset:
                mel = self.model.token2mel(self._token_tensor(len(self.tokens)), self.prompt,
                                           streaming=False, finalize=True)
                self.mel_parts.append(_change_speed(mel[:, :, done_frames:], self.speed))
        else:
            _, end = self.schedule.advance()
            mel = self.model.token2mel(self._token_tensor(end + self.schedule.lookahead), self.prompt,
                                       streaming=True, finalize=False)
            self.mel_parts.append(_change_speed(mel[:, :, done_frames:], self.speed))
        if not self.mel_parts:
            return np.zeros(0, np.float32), final
        wav = self.model.mel2wav(torch.cat(self.mel_parts, dim=2), finalize=final)
        new = wav[self.samples_sent:].cpu().numpy()
        self.samples_sent = max(self.samples_sent, wav.shape[0])
        self.n_chunks += 1
        return new, final


def _change_speed(mel: torch.Tensor, speed: float) -> torch.Tensor:
    """Time-stretch a mel (1, 80, T) to int(T / speed) frames by linear interpolation."""
    if speed == 1.0 or mel.shape[2] == 0:
        return mel
    return F.interpolate(mel.float(), size=max(1, int(mel.shape[2] / speed)), mode="linear").to(mel.dtype)


class SynthesisJob:
    """One request in progress. `step()` does one unit of work; `done` when every segment is out."""

    def __init__(self, model: CosyVoice3, request: SynthesisRequest):
        self.model, self.request = model, request
        self.mode, self.segments = model.plan_segments(request)
        if not 0 <= request.start_segment <= len(self.segments):
            raise BadInputError(f"start_segment {request.start_segment} outside 0..{len(self.segments)}")
        self.prompt = _PromptTensors.of(request.prompt, model.device, model.dtype)
        self.segment_index = request.start_segment
        self.chunk_index = 0
        self.current: _SegmentSynth | None = None
        self.cancelled = False
        self.t_start = time.perf_counter()
        self.stats: dict = {"mode": self.mode, "segments": len(self.segments), "speech_tokens": 0,
                            "audio_s": 0.0, "first_chunk_s": None, "wall_s": 0.0, "rtf": None}

    @property
    def done(self) -> bool:
        return self.cancelled or self.segment_index >= len(self.segments)

    @property
    def progress(self) -> float:
        if not self.segments:
            return 1.0
        inner = 0.0
        if self.current is not None:
            inner = 0.9 * len(self.current.tokens) / max(1, self.current.decoder.max_len)
        return min(1.0, (self.segment_index + inner) / len(self.segments))

    def cancel(self) -> None:
        self.cancelled = True
        self.current = None

    def step(self) -> list[AudioChunk]:
        if self.done:
            return []
        if self.current is None:
            seg = self.segment_index
            ids = self.model.llm_inputs(self.mode, self.segments[seg], self.request.prompt, self.request.instruction)
            self.current = _SegmentSynth(self.model, self.prompt, ids, segment_seed(self.request.seed, seg),
                                         self.request.stream, float(self.request.speed), self.request.forced_tokens)
            self.chunk_index = 0
        out = []
        for pcm, last in self.current.step():
            out.append(AudioChunk(pcm.astype(np.float32, copy=False), self.model.sample_rate, self.segment_index,
                                  self.chunk_index, last))
            self.chunk_index += 1
            self._account(pcm)
        if self.current.done:
            self.stats["speech_tokens"] += len(self.current.tokens)
            self.segment_index += 1
            self.current = None
        return out

    def _account(self, pcm: np.ndarray) -> None:
        now = time.perf_counter() - self.t_start
        if self.stats["first_chunk_s"] is None and len(pcm):
            self.stats["first_chunk_s"] = round(now, 4)
        self.stats["audio_s"] = round(self.stats["audio_s"] + len(pcm) / self.model.sample_rate, 4)
        self.stats["wall_s"] = round(now, 4)
        if self.stats["audio_s"] > 0:
            self.stats["rtf"] = round(now / self.stats["audio_s"], 4)


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))
