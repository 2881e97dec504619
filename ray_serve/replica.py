"""`WorkerReplica`: one Serve replica = one supervised worker, the same code as the app's.

Each replica runs one `Supervisor` (worker/supervisor/) with its worker process (model, engines,
batching scheduler) on the one GPU Ray gives the replica (`ray_actor_options={"num_gpus": 1}`:
Ray sets CUDA_VISIBLE_DEVICES, which the spawned worker inherits), or on the CPU. Crash, hang,
stall, out-of-memory and memory-ceiling recovery are the supervisor's, exactly as in the app:
requests in flight are resubmitted to the restarted worker and streams resume where they were.

- `submit(msg)`: a streaming method (Serve's streaming handles): the request's events, ending
  with its Done or Failed. When the caller cancels the stream (the client left, Stop), Serve
  cancels this generator and the request is cancelled in the worker.
- `check_health`: Ray's health check, failing by the rules of checks.py (boot failed, the
  supervisor's loop stopped, no ready worker long after a restart); Ray then replaces the replica.
- every `report_s` the supervisor's health goes to the `HealthBoard` (board.py) for `/health`.

The constructor returns once the worker is ready, so Serve routes requests only to replicas that
can serve them; a worker that cannot boot fails the constructor with its reason.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading

from ray import serve

from ray_serve.checks import HealthRules, replica_problem
from worker.protocol import Done, Failed, PreparePrompt, Synthesize, Transcribe
from worker.supervisor import BOOT_FAILED, READY, STOPPED, Supervisor

log = logging.getLogger("ray_serve.replica")
DEFAULT_RULES = HealthRules()


@serve.deployment
class WorkerReplica:
    """app_args: the app's own flags (app.py), for the worker and its supervision. board: the
    HealthBoard's handle. boot_timeout_s: the longest the constructor waits for a ready worker
    (the first start on a GPU builds engines for minutes)."""

    def __init__(self, app_args: list[str], board, rules: HealthRules = DEFAULT_RULES, report_s: float = 1.0,
                 boot_timeout_s: float = 1800.0):
        from app import parse_args, supervisor_config

        self._id = serve.get_replica_context().replica_id.unique_id
        self._board, self._rules, self._report_s = board, rules, report_s
        self.supervisor = Supervisor(supervisor_config(parse_args(app_args)), name=f"cosyfast-worker-{self._id}")
        self.supervisor.start()
        self._stopped = threading.Event()
        threading.Thread(target=self._report_health, name="replica-health", daemon=True).start()
        booted = self.supervisor.wait_for(lambda: self.supervisor.state in (READY, BOOT_FAILED, STOPPED),
                                          boot_timeout_s)
        if self.supervisor.state != READY:
            worker = self.supervisor.health()["worker"]
            self.__del__()
            raise RuntimeError(f"the model worker could not start: {worker['boot_error']}" if booted else
                               f"the model worker was not ready after {boot_timeout_s:.0f} s ({worker['state']})")
        log.info("replica %s ready: worker %s", self._id, self.supervisor.health()["worker"]["pid"])

    async def submit(self, msg: Synthesize | PreparePrompt | Transcribe):
        """The events of one request, ending with its Done or Failed (a streaming method)."""
        events = self.supervisor.submit(msg)
        bridge = _EventBridge(events, msg.request_id)
        ended = False
        try:
            while not ended:
                event = await bridge.next()
                ended = isinstance(event, (Done, Failed))
                yield event
        finally:
            if not ended:  # the caller cancelled the stream
                self.supervisor.cancel(msg.request_id)

    def check_health(self) -> None:
        problem = replica_problem(self.supervisor.health, self.supervisor.loop_age(), self._rules)
        if problem is not None:
            log.error("replica %s is unhealthy: %s", self._id, problem)
            raise RuntimeError(problem)

    def _report_health(self) -> None:
        while True:
            try:
                self._board.post.remote(self._id, self.supervisor.health()).result(timeout_s=10 * self._report_s)
            except Exception as e:  # the board is being replaced: the next report gets through
                log.warning("replica %s could not post its health: %s", self._id, e)
            if self._stopped.wait(self._report_s):
                return

    def __del__(self):
        """Serve's graceful shutdown of the replica: stop the worker and leave the board."""
        if not hasattr(self, "_stopped") or self._stopped.is_set():
            return
        self._stopped.set()
        self.supervisor.stop()
        try:
            self._board.leave.remote(self._id).result(timeout_s=5)
        except Exception:
            pass  # its report goes stale on the board


class _EventBridge:
    """The supervisor's event queue of one request, read by a thread of its own (its `get`
    blocks) and handed to the replica's event loop; the thread ends with the request's last
    event, which always comes (the supervisor answers every request, a cancelled one too)."""

    def __init__(self, events: queue.SimpleQueue, request_id: str):
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._events = events
        threading.Thread(target=self._pump, name=f"replica-events-{request_id[:8]}", daemon=True).start()

    def _pump(self) -> None:
        while True:
            event = self._events.get()
            try:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
            except RuntimeError:  # the replica's loop has closed
                return
            if isinstance(event, (Done, Failed)):
                return

    async def next(self):
        return await self._queue.get()
