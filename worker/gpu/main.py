"""The worker process: boots the model, then serves requests until told to stop.

Started by worker/supervisor/process.py with the spawn start method (`run` is the process
target). This module imports neither gradio nor, at import time, torch. Threads:
- main: boot (resolve the model directory, downloading it if needed; load the model; both
  report `Progress` with request id ''), then `Ready` or `BootFailed`, then the scheduler loop;
- pipe reader: every message from the app goes to the scheduler's inbox; EOF (the app is gone)
  becomes a `Shutdown`, and the process exits anyway `ORPHAN_EXIT_S` later;
- heartbeat: every `heartbeat_s` a `Heartbeat` with the scheduler's step counter (advanced only
  by the model loop), the busy request ids, RSS and, on CUDA, GPU memory.
Both the main and the heartbeat thread send, so sends share one lock. SIGTERM only enqueues a
`Shutdown` (`SimpleQueue.put` is safe in a signal handler). Exit status: 0 after a shutdown,
2 when the boot failed, 3 when poisoned (right after saying so).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection

import psutil

from cosyvoice3.download import resolve_model
from worker.gpu.faults import FaultInjector, enabled_by_env
from worker.gpu.transcription import Transcriber, recognizer_loader
from worker.logs import install_worker_logging
from worker.protocol import (
    BOOT_FAILED_EXIT,
    POISONED_EXIT,
    BootFailed,
    Heartbeat,
    Progress,
    Ready,
    Shutdown,
    WorkerConfig,
)

log = logging.getLogger("worker")

ORPHAN_EXIT_S = 10.0


class _Sender:
    """Thread-safe sends; a broken pipe means the app is gone, so the worker leaves. Every send
    goes through `faults.send` (a plain `conn.send` unless a test armed a fault in it)."""

    def __init__(self, conn: Connection, faults: FaultInjector):
        self.conn = conn
        self.faults = faults
        self._lock = threading.Lock()

    def send(self, msg) -> None:
        try:
            with self._lock:
                self.faults.send(self.conn, msg)
        except OSError:
            os._exit(0)


class _Worker:
    """One worker process: its threads, its boot and its scheduler (None until booted)."""

    def __init__(self, conn: Connection, config: WorkerConfig):
        self.conn = conn
        self.config = config
        self.faults = FaultInjector(config.faults or enabled_by_env())
        self.sender = _Sender(conn, self.faults)
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.scheduler = None  # a worker.gpu.scheduler.Scheduler once booted
        self.cuda = False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda signum, frame: self.inbox.put(Shutdown("SIGTERM")))
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the app, which stops us
        threading.Thread(target=self._read_pipe, name="pipe-reader", daemon=True).start()
        threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True).start()
        try:
            scheduler, info = self._boot()
        except Exception as exc:
            log.exception("boot failed")
            self.sender.send(BootFailed(os.getpid(), f"{type(exc).__name__}: {exc}", getattr(exc, "code", "internal")))
            return BOOT_FAILED_EXIT
        self.scheduler = scheduler
        self.sender.send(Ready(os.getpid(), info))
        log.info("ready: device %s, backends %s", info.get("device"),
                 {k: v.get("backend") for k, v in info.get("backends", {}).items()})
        scheduler.run()
        if scheduler.poisoned:
            return POISONED_EXIT
        return 0

    def _boot(self):
        """Resolve and load the model, build its backends (engines/), start the scheduler and
        warm its decode steps. Returns (scheduler, info for `Ready`)."""
        def progress(stage: str, fraction: float, message: str = "") -> None:
            self.sender.send(Progress("", stage, float(fraction), message))

        cfg = self.config
        progress("starting", 0.0, "resolving the model directory")
        resolved = resolve_model(cfg.model_dir, demo=cfg.demo, cache_dir=cfg.cache_dir, progress=progress)
        progress("loading", 0.0, f"loading {resolved.path}")
        import torch

        import engines
        from worker.gpu.scheduler import Scheduler

        device = cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.cuda = device.startswith("cuda")
        model = engines.load_model(resolved.path, device=device, dtype=engines.model_dtype(cfg.dtype, device),
                                   backend=cfg.backend, llm_kernels=cfg.llm_kernels,
                                   progress=progress, limits=cfg.limits)
        info = dict(model.info())
        info.update(demo=bool(info.get("demo")) or resolved.demo, model_dir=str(resolved.path),
                    model_source=resolved.source, demo_reason=resolved.reason)
        load = recognizer_loader(cfg, demo=bool(info["demo"])) if cfg.asr else None
        transcriber = Transcriber(load, self.sender.send, self.inbox.put, info.get("device", "cpu"), model.limits)
        if self.cuda:  # the serving machine: inflect's slow import off the model loop (CPU tests skip it)
            model.text_normalizer.import_inflect_in_background()
        rows = cfg.rows(self.cuda)
        scheduler = Scheduler(model, self.sender.send, self.faults, rows=rows, max_len=cfg.max_positions,
                              policy=cfg.policy, inbox=self.inbox, transcriber=transcriber)
        progress("engines", 0.99, "warming up the decode steps")
        scheduler.engine.tokens.warm()
        info["batch"] = {"rows": rows, "max_positions": cfg.max_positions}
        return scheduler, info

    def _read_pipe(self) -> None:
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                if self.scheduler is None:  # still booting: nobody would ever read our answer
                    os._exit(0)
                self.inbox.put(Shutdown("the app closed the pipe"))
                time.sleep(ORPHAN_EXIT_S)  # a model loop that does not stop (hung) must not outlive the app
                os._exit(1)
            self.inbox.put(msg)

    def _heartbeats(self) -> None:
        process = psutil.Process()
        while True:
            time.sleep(self.config.heartbeat_s)
            if self.faults.heartbeat_paused.is_set():
                continue
            scheduler = self.scheduler
            gpu = 0
            if self.cuda and "torch" in sys.modules:
                gpu = sys.modules["torch"].cuda.memory_reserved()
            self.sender.send(Heartbeat(time.time(), scheduler.busy if scheduler else (),
                                       scheduler.steps if scheduler else 0, gpu, process.memory_info().rss,
                                       os.getpid(), scheduler.batch if scheduler else {}))


def run(conn: Connection, log_conn: Connection, config: WorkerConfig) -> None:
    """Process entry point (the spawn target)."""
    install_worker_logging(log_conn, config.log_level)
    code = _Worker(conn, config).run()
    logging.shutdown()
    # Skip the interpreter's teardown: nothing is left to flush (sends are synchronous), tearing
    # down torch/CUDA takes a while, and a poisoned CUDA context may not tear down at all.
    os._exit(code)
