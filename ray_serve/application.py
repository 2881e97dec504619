"""The Serve application: the ingress, the worker replicas and the health board, bound together.

    serve run ray_serve.application:build app_args="--demo --device cpu" max_replicas=2
    serve run serve.yaml                       # the same, described in a file (see serve.yaml)

    from ray_serve.application import ClusterOptions, build
    serve.run(build(ClusterOptions(app_args="--demo", min_replicas=2, max_replicas=2)), route_prefix="/")

`ClusterOptions` are the application's arguments (`args:` in serve.yaml, `key=value` after
`serve run`): the app's own flags (`app_args`, the same as `python app.py ...`, read by app.py's
parser) and how Serve runs the replicas: how many (`min_replicas`..`max_replicas`, autoscaled on
ongoing requests per replica against `target_ongoing_requests`), what each one owns (one GPU by
default, none with `--device cpu`), and how often Ray asks each one for its health.

A replica admits at most `--max-queue` requests (Serve's `max_ongoing_requests`, the supervisor's
own bound); when every replica is full, Serve's router holds up to `--max-queue` more, and past
that a request is answered `overloaded` at once.
"""

from __future__ import annotations

import shlex

from pydantic import BaseModel, Field

from ray_serve.board import HealthBoard
from ray_serve.checks import HealthRules
from ray_serve.ingress import Ingress
from ray_serve.replica import WorkerReplica


class ClusterOptions(BaseModel):
    app_args: str | list[str] = Field("", description="the app's flags, as on `python app.py`'s command line")
    min_replicas: int = Field(1, ge=1, description="worker replicas kept running")
    max_replicas: int = Field(1, ge=1, description="worker replicas at most (autoscaling above min_replicas)")
    target_ongoing_requests: float = Field(32.0, gt=0, description="ongoing requests per replica the "
                                           "autoscaler aims at (queue length: above it, replicas are added)")
    gpus_per_replica: float | None = Field(None, ge=0, description="GPUs a replica owns; default 1, 0 with "
                                           "--device cpu")
    cpus_per_replica: float = Field(1.0, ge=0)
    ingress_cpus: float = Field(1.0, ge=0)
    health_check_period_s: float = Field(5.0, gt=0, description="how often Ray runs a replica's health check")
    health_check_timeout_s: float = Field(30.0, gt=0, description="a health check answering later fails")
    loop_timeout_s: float = Field(HealthRules.loop_timeout_s, gt=0)
    recovery_timeout_s: float = Field(HealthRules.recovery_timeout_s, gt=0)
    report_s: float = Field(1.0, gt=0, description="how often replicas post their health for /health")

    def argv(self) -> list[str]:
        return shlex.split(self.app_args) if isinstance(self.app_args, str) else list(self.app_args)


def build(options: ClusterOptions | dict):
    """The Serve application of `options` (a Serve app builder: `serve run` and serve.yaml call it
    with the arguments as a dict)."""
    from app import parse_args

    options = options if isinstance(options, ClusterOptions) else ClusterOptions.model_validate(options or {})
    argv = options.argv()
    args = parse_args(argv)  # the app's own checks of its flags, on the driver, before anything starts
    gpus = options.gpus_per_replica
    if gpus is None:
        gpus = 0.0 if args.device == "cpu" else 1.0
    scaling = ({"num_replicas": options.min_replicas} if options.min_replicas >= options.max_replicas else
               {"autoscaling_config": {"min_replicas": options.min_replicas, "max_replicas": options.max_replicas,
                                       "target_ongoing_requests": options.target_ongoing_requests}})
    replicas = WorkerReplica.options(
        ray_actor_options={"num_gpus": gpus, "num_cpus": options.cpus_per_replica},
        max_ongoing_requests=args.max_queue, max_queued_requests=args.max_queue,
        health_check_period_s=options.health_check_period_s, health_check_timeout_s=options.health_check_timeout_s,
        **scaling)
    board = HealthBoard.bind(stale_s=max(5.0, 5 * options.report_s))
    rules = HealthRules(loop_timeout_s=options.loop_timeout_s, recovery_timeout_s=options.recovery_timeout_s)
    ingress = Ingress.options(ray_actor_options={"num_cpus": options.ingress_cpus}, max_ongoing_requests=10_000)
    return ingress.bind(argv, replicas.bind(argv, board, rules, options.report_s), board,
                        refresh_s=options.report_s)
