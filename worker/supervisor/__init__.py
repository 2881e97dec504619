"""The app-side keeper of one GPU worker process: start, watch, restart, retry. Never imports torch.

`Supervisor(config)` is one worker process under its own watch; several can run side by side
(one per GPU), each with its own book, process and loop. The parts, each small enough to hold in
one's head:

- `loop.py`: `Supervisor`, its public face (`start`, `stop`, `submit`, `cancel`, `health`, `state`,
  `wait_for`) and its loop (`handle` a message by its type, `check` the clocks);
- `book.py`: the request book - admission bounds, attempts, the resume point, one answer per
  request (pure);
- `process.py`: one worker process - spawn, reader and writer threads, SIGTERM/SIGKILL, reap, and
  why it exited;
- `watch.py`: what is known of one worker (heartbeats, memory, stop decisions) and the checks on
  it - hang, stall, memory ceiling, recycling, boot time, idle release (pure, the time passed in);
- `pacing.py`: backoff between restarts, giving up on a worker that cannot boot (pure);
- `causes.py`: the restart causes - names, error codes, words;
- `health.py`: worker states, the restart history, the health report;
- `config.py`: `SupervisorConfig`.
"""

from worker.supervisor.config import SupervisorConfig
from worker.supervisor.health import BOOT_FAILED, IDLE, LOADING, READY, RECOVERING, STARTING, STOPPED, WAKING
from worker.supervisor.loop import Supervisor

__all__ = ["Supervisor", "SupervisorConfig", "STARTING", "LOADING", "READY", "RECOVERING", "BOOT_FAILED",
           "STOPPED", "IDLE", "WAKING"]
