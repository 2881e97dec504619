"""Speech recognition in the worker: the recogniser, loaded once on first use, and `Transcribe`
requests answered with a `Transcript` and a `Done`.

The scheduler hands every `Transcribe` to `Transcriber.admit` as it arrives. While the recogniser
is not loaded the message is parked here and loading starts in a background thread: resolving
the directory (a download on first use) and reading it into CPU memory take seconds to minutes,
and the model loop keeps serving synthesis meanwhile. Parked requests get `Progress` messages
(stages "recognizer_download", "recognizer") and go back into the scheduler's inbox once the
recogniser is there or could not be loaded. A parked request is not busy, so the stall detector
leaves the loading alone; its deadline still holds. Then `Transcriber.step(msg)` runs in the model
loop (its one step): the prompt checks, recognition, the answer. The first step moves the
recogniser to the worker's device, in the model loop's thread, never beside a CUDA graph capture.
Errors raised there (out of memory, a CUDA error, a bad prompt) are sorted by the scheduler like
those of any request; a recogniser that cannot be loaded fails the requests parked for it with a
sentence that says to type the transcript, and the next request tries again.

Imports no torch until the recogniser is loaded.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from cosyvoice3.errors import CosyVoiceError
from cosyvoice3.modes import Limits
from worker.protocol import Done, Progress, Transcribe, Transcript, WorkerConfig

log = logging.getLogger("worker.transcription")

Loader = Callable[[Callable[[str, float, str], None]], Any]  # progress -> a CPU Recognizer


class RecognizerUnavailable(CosyVoiceError):
    """The recogniser is switched off or could not be loaded; synthesis is not affected."""


class Transcriber:
    """load: builds the recogniser on the CPU (None: recognition is switched off). send: the
    worker's thread-safe send. requeue: puts a message back into the scheduler's inbox."""

    def __init__(self, load: Loader | None, send: Callable[[Any], None], requeue: Callable[[Any], None],
                 device: str = "cpu", limits: Limits | None = None):
        self.load, self.send, self.requeue = load, send, requeue
        self.device, self.limits = device, limits or Limits()
        self._lock = threading.Lock()
        self._recognizer = None
        self._on_device = False
        self._loading: threading.Thread | None = None
        self._parked: dict[str, Transcribe] = {}
        self._failed: dict[str, str] = {}  # request id -> why the load it waited for failed

    def admit(self, msg: Transcribe) -> bool:
        """True when `msg` can be stepped now; otherwise it is parked until the recogniser is loaded."""
        with self._lock:
            if self.load is None or self._recognizer is not None or msg.request_id in self._failed:
                return True
            self._parked[msg.request_id] = msg
            if self._loading is None:
                self._loading = threading.Thread(target=self._load, name="recognizer-loader", daemon=True)
                self._loading.start()
            return False

    def drop(self, request_id: str) -> bool:
        """Forget a parked request (cancelled); True when it was parked."""
        with self._lock:
            return self._parked.pop(request_id, None) is not None

    def step(self, msg: Transcribe) -> None:
        """Answer `msg`: `Transcript` then `Done`. Raises what recognition raises."""
        from asr.prompt import transcribe_prompt

        started = time.perf_counter()
        recognizer = self._ready_recognizer(msg.request_id)
        result = transcribe_prompt(recognizer, msg.audio, msg.sample_rate, self.limits, msg.language)
        self.send(Transcript(msg.request_id, result.text, result.language, result.emotion, result.event,
                             demo=recognizer.demo))
        self.send(Done(msg.request_id, {"elapsed_s": time.perf_counter() - started, "audio_s": result.audio_s,
                                        "recognize_s": result.elapsed_s, "attempt": msg.attempt,
                                        "recognizer": recognizer.info()}))

    def _ready_recognizer(self, request_id: str):
        with self._lock:
            if self.load is None:
                raise RecognizerUnavailable("Speech recognition is switched off; type the transcript of the prompt.")
            failure = self._failed.pop(request_id, None)
            recognizer = self._recognizer
        if failure is not None:
            raise RecognizerUnavailable(f"The speech recogniser could not be loaded ({failure}); "
                                        "type the transcript of the prompt.")
        if not self._on_device:
            recognizer.to(self.device)
            self._on_device = True
        return recognizer

    def _load(self) -> None:
        """The loader thread: build the recogniser, then send every parked request back."""
        def progress(stage: str, fraction: float, message: str = "") -> None:
            with self._lock:
                waiting = list(self._parked)
            for request_id in waiting:
                self.send(Progress(request_id, stage, float(fraction), message))

        try:
            recognizer, failure = self.load(progress), None
            log.info("speech recogniser loaded (%s)", recognizer.info())
        except Exception as exc:  # a failed download, a bad directory, ...: told to the waiting requests
            log.warning("the speech recogniser could not be loaded: %s", exc)
            recognizer, failure = None, f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._recognizer, self._loading = recognizer, None
            parked, self._parked = self._parked, {}
            if failure is not None:
                self._failed.update({rid: failure for rid in parked})
        for msg in parked.values():
            self.requeue(msg)


def recognizer_loader(config: WorkerConfig, demo: bool) -> Loader:
    """The load function for this worker: resolve the recogniser (downloading it on first use, the
    demo one for the demo model) and read it into CPU memory."""

    def load(progress):
        from asr.files import resolve_recognizer
        from asr.recognizer import Recognizer

        progress("recognizer", 0.0, "loading the speech recogniser")
        resolved = resolve_recognizer(config.asr_model_dir, demo=demo, cache_dir=config.cache_dir, progress=progress)
        return Recognizer.from_pretrained(resolved.path, device="cpu", progress=progress)

    return load
