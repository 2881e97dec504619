"""One worker process as the app sees it: spawn, talk, signal, reap, and say why it died.

`WorkerProcess.launch(config, post)` starts a process running `worker.gpu.main.run` (spawn context)
with two pipes - messages both ways, log records one way (worker/logs.py) - and two threads of
its own, so that nothing the process does can block the supervisor's loop:
- the reader waits on the pipe and the process sentinel together and posts every message it
  reads as `post(process, message)`; once the process has exited (and the pipe is drained) it
  reaps it and posts `Exited(exitcode)`, always last. A worker frozen halfway through writing a
  message blocks this thread, and only this thread, until the worker is killed.
- the writer sends what `send()` queued; a worker that stops reading blocks only the writer.
`terminate()` (SIGTERM: the worker shuts down) and `kill()` (SIGKILL) never signal a process
that has been reaped, whose pid may belong to someone else by then.

`explain_exit` turns an exit status into words for logs and health; a SIGKILL the supervisor did
not send, with the worker's memory near the limit, reads as a likely out-of-memory kill.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Callable

import psutil

from worker.logs import WorkerLogListener
from worker.protocol import BOOT_FAILED_EXIT, POISONED_EXIT, WorkerConfig

log = logging.getLogger("worker.supervisor")

LIKELY_OOM_FRACTION = 0.9  # of the memory limit: a SIGKILL above this is probably the OOM killer
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


@dataclass
class Exited:
    """Posted by a worker process's reader thread after it reaped the process."""

    exitcode: int | None


class WorkerProcess:
    """One incarnation of the worker process (see the module docstring)."""

    def __init__(self, process: multiprocessing.Process, conn, logs: WorkerLogListener,
                 post: Callable[["WorkerProcess", object], None]):
        self.pid: int = process.pid
        self._process = process
        self._conn = conn
        self._logs = logs
        self._post = post
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._reaped = False
        self._signal_lock = threading.Lock()
        self._writer = threading.Thread(target=self._write, name=f"worker-{self.pid}-writer", daemon=True)
        self._reader = threading.Thread(target=self._read, name=f"worker-{self.pid}-reader", daemon=True)

    @classmethod
    def launch(cls, config: WorkerConfig, post: Callable[["WorkerProcess", object], None],
               name: str = "cosyfast-worker") -> "WorkerProcess":
        """Start the process and its reader and writer threads; returns at once (it boots on its own)."""
        # the one name of the GPU-process package the app side uses, imported here only: the
        # spawned child imports it again by its module path (no gradio, no torch at import time)
        from worker.gpu.main import run

        ctx = multiprocessing.get_context("spawn")
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        log_read, log_write = ctx.Pipe(duplex=False)
        logs = WorkerLogListener(log_read)
        process = ctx.Process(target=run, args=(child_conn, log_write, config), name=name)
        logs.start()
        try:
            try:
                process.start()
            finally:
                child_conn.close()  # our copies of the child's ends: without closing them EOF never comes
                log_write.close()
        except BaseException:
            parent_conn.close()
            logs.stop()
            raise
        worker = cls(process, parent_conn, logs, post)
        worker._writer.start()
        worker._reader.start()
        return worker

    def send(self, msg) -> None:
        """Queue `msg` for the worker; never blocks (messages to a dead worker are dropped)."""
        self._outbox.put(msg)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        with self._signal_lock:
            if self._reaped:
                return
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    # ------------------------------------------------------------------ threads

    def _write(self) -> None:
        while True:
            msg = self._outbox.get()
            if msg is None:
                return
            try:
                self._conn.send(msg)
            except (OSError, ValueError):  # it died; the reader reports the exit
                return

    def _read(self) -> None:
        conn, sentinel = self._conn, self._process.sentinel
        handles = [conn, sentinel]
        while conn in handles:
            ready = wait(handles)
            if conn in ready:
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    handles.remove(conn)  # the worker's end closed: it exited, or is about to
                    continue
                except Exception:  # an unreadable message: the pipe is out of step for good
                    log.exception("worker %d sent a message that cannot be read; not reading it any more", self.pid)
                    handles.remove(conn)
                    continue
                self._post(self, msg)
            elif sentinel in ready:
                break  # exited with nothing left in the pipe (a child of it may hold the pipe open)
        wait([sentinel])  # after EOF the process may take a moment; a hung one is killed by the watchdog
        with self._signal_lock:
            self._process.join()
            self._reaped = True
        exitcode = self._process.exitcode
        self._outbox.put(None)
        self._writer.join(timeout=1.0)
        conn.close()
        self._logs.stop(timeout=1.0)
        self._process.close()
        self._post(self, Exited(exitcode))


def memory_limit() -> int:
    """Bytes the worker can have at most: the cgroup's memory limit or the machine's memory."""
    limits = [psutil.virtual_memory().total]
    for path in _CGROUP_LIMITS:
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits)


def explain_exit(exitcode: int | None, *, asked: bool, rss: int = 0, limit: int | None = None) -> str:
    """Words for an exit status, to follow "the worker ...". `asked`: the supervisor asked it to
    stop (or killed it); `rss`: its last reported memory; `limit`: the memory it may have."""
    if exitcode is None:
        return "vanished without an exit status"
    if exitcode == 0:
        return "exited normally"
    if exitcode == BOOT_FAILED_EXIT:
        return f"exited after a failed boot (code {exitcode})"
    if exitcode == POISONED_EXIT:
        return f"exited after an error its CUDA context does not survive (code {exitcode})"
    if exitcode > 0:
        return f"exited with code {exitcode}"
    signum = -exitcode
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    text = f"was killed by {name} (signal {signum})"
    if signum == signal.SIGKILL and not asked and limit and rss >= LIKELY_OOM_FRACTION * limit:
        text += (f" with its memory at {rss / 2**20:.0f} MB of a {limit / 2**20:.0f} MB limit: "
                 f"likely killed for running out of memory")
    return text
