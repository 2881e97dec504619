"""`Ingress`: the page and the OpenAI-compatible API of the Serve application.

The same FastAPI + Gradio app the single-machine app serves (`app.build_app`: `/health`, `/v1`,
the page at `/`, with the access rules of webui/access.py), built from the same flags, with a
`WorkerClient` over `ServeWorkers` (workers.py) instead of over a local Supervisor: every request
goes to a `WorkerReplica` through a Serve handle. The voice library lives on the ingress
replica's disk (`--voices-dir`): run one ingress replica, or point it at shared storage.
"""

from __future__ import annotations

import os

from ray import serve

from ray_serve.workers import ServeWorkers
from worker.client import WorkerClient


@serve.deployment(num_replicas=1)
@serve.ingress()
class Ingress:
    """app_args: the app's flags (app.py) for the web side: access (--auth, --api-key, --host:
    where Serve's HTTP proxy listens), limits, voices. replicas, board: the handles of the
    WorkerReplica and HealthBoard deployments."""

    def __init__(self, app_args: list[str], replicas, board, refresh_s: float = 1.0):
        from app import parse_args

        os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
        self.args = parse_args(app_args)
        self.workers = ServeWorkers(replicas, board, refresh_s=refresh_s)
        self.client = WorkerClient(self.workers)

    def __serve_build_asgi_app__(self):
        from app import build_app

        return build_app(self.client, self.args)

    def __del__(self):
        if hasattr(self, "workers"):
            self.workers.stop()
