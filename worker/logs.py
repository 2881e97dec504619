"""Log records of the worker process, delivered to the app process's logging.

Choice: the standard library's `QueueHandler` (worker) and `QueueListener` (app), not
multiprocessing-logging: that package refuses the spawn start method and, given a spawn context,
silently loses the children's records.

Transport: a one-way `Pipe` per worker process, wrapped in the two queue methods those classes
call (`PipeQueue`), rather than a shared `ctx.Queue()`. A worker killed with SIGKILL while its
queue feeder thread holds the queue's cross-process write lock, or halfway through writing a
long record, would leave a shared queue wedged for the next worker (and the reader blocked
forever). A pipe belongs to one worker: when that worker dies the app reads EOF and the
listener ends.

In the app every record is handed to the app's logger of the same name, so the app's levels,
handlers and format apply. Records keep the worker's `process` (pid) and `processName`.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import threading
from multiprocessing.connection import Connection

APP_LOG_FORMAT = "%(asctime)s %(levelname)s %(processName)s[%(process)d] %(name)s: %(message)s"


class PipeQueue:
    """`put_nowait` (worker side, any thread) and `get` (app side) over one pipe end."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self._lock = threading.Lock()

    def put_nowait(self, record: logging.LogRecord) -> None:
        with self._lock:
            try:
                self.conn.send(record)
            except OSError:  # the app is gone; nobody is left to read the record
                pass

    def get(self, block: bool = True) -> logging.LogRecord:
        try:
            return self.conn.recv()
        except (EOFError, OSError):  # the worker exited: QueueListener stops on queue.Empty
            raise queue.Empty from None


def install_worker_logging(conn: Connection, level: int) -> None:
    """In the worker: send every record of the root logger (at `level` and above) to the app."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(logging.handlers.QueueHandler(PipeQueue(conn)))
    root.setLevel(level)
    logging.captureWarnings(True)


class _ToAppLogger(logging.Handler):
    """Hands a worker record to the app's logger of the same name (its level decides)."""

    def emit(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


class WorkerLogListener(logging.handlers.QueueListener):
    """In the app: reads one worker's records until that worker's pipe ends."""

    def __init__(self, conn: Connection):
        super().__init__(PipeQueue(conn), _ToAppLogger())
        self.conn = conn

    def stop(self, timeout: float = 1.0) -> None:
        """Wait (at most `timeout`) for the records still in the pipe, then close it. Call after
        the worker has exited."""
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.conn.close()
