"""The Serve application: the ingress, the worker replicas and the health board, bound together.

    serve run ray_serve.application:build app_args="--demo --device cpu" max_replicas=2
    serve run serve.yaml                       # the same, described in a file (see serve.yaml)

    from ray_serve.application import ClusterOptions, build
    serve.run(build(ClusterOptions(app_args="--demo", min_replicas=2, max_replicas=2)), route_prefix="/")

`ClusterOptions` are the application's arguments (`args:` in serve.yaml, `key=value` after
`serve run`): the app's own flags (`app_args`, the same as `python app.py ...`, read by app.py's
parser) and how Serve runs the replicas: how many (`min_replicas`..`max_replicas`, autoscaled on
ongoing requests per replica against `target_ongoing_requests`), what each one owns (one GPU and
one CPU by default; with `--device cpu` no GPU and half a CPU, the ingress too, so two CPU
replicas and the ingress fit a 2-core machine), and how often Ray asks each one for its health.
When Ray is already up as the application is built (`serve deploy`, `serve run serve.yaml` on a
cluster, `serve.run` in Python), a cluster too small for the ingress and `min_replicas` replicas
is logged with the shortfall (a cluster that adds nodes on demand may still grow to fit).

A replica admits at most `--max-queue` requests (Serve's `max_ongoing_requests`, the supervisor's
own bound); when every replica is full, Serve's router holds up to `--max-queue` more, and past
that a request is answered `overloaded` at once.
"""

from __future__ import annotations

import logging
import shlex

from pydantic import BaseModel, Field

from ray_serve.board import HealthBoard
from ray_serve.checks import HealthRules
from ray_serve.ingress import Ingress
from ray_serve.replica import WorkerReplica

log = logging.getLogger("ray_serve")

# CPUs Ray reserves for a replica and for the ingress: a GPU replica's CPU work is the GPU's
# feeding; a CPU replica shares the cores with the others (its worker's threads are not Ray's to
# count), so it asks for a share that lets two replicas and the ingress start on two cores.
GPU_APP_CPUS, CPU_APP_CPUS = 1.0, 0.5


class ClusterOptions(BaseModel):
    app_args: str | list[str] = Field("", description="the app's flags, as on `python app.py`'s command line")
    min_replicas: int = Field(1, ge=1, description="worker replicas kept running")
    max_replicas: int = Field(1, ge=1, description="worker replicas at most (autoscaling above min_replicas)")
    target_ongoing_requests: float = Field(32.0, gt=0, description="ongoing requests per replica the "
                                           "autoscaler aims at (queue length: above it, replicas are added)")
    gpus_per_replica: float | None = Field(None, ge=0, description="GPUs a replica owns; default 1, 0 with "
                                           "--device cpu")
    cpus_per_replica: float | None = Field(None, ge=0, description=f"CPUs Ray reserves for a replica; default "
                                           f"{GPU_APP_CPUS:g}, {CPU_APP_CPUS:g} with --device cpu")
    ingress_cpus: float | None = Field(None, ge=0, description=f"CPUs Ray reserves for the ingress; default "
                                       f"{GPU_APP_CPUS:g}, {CPU_APP_CPUS:g} with --device cpu")
    health_check_period_s: float = Field(5.0, gt=0, description="how often Ray runs a replica's health check")
    health_check_timeout_s: float = Field(30.0, gt=0, description="a health check answering later fails")
    loop_timeout_s: float = Field(HealthRules.loop_timeout_s, gt=0)
    recovery_timeout_s: float = Field(HealthRules.recovery_timeout_s, gt=0)
    report_s: float = Field(1.0, gt=0, description="how often replicas post their health for /health")

    def argv(self) -> list[str]:
        return shlex.split(self.app_args) if isinstance(self.app_args, str) else list(self.app_args)

    def resolved(self, device: str) -> "ClusterOptions":
        """These options with the defaults that depend on the app's `--device` filled in."""
        cpu = device == "cpu"
        default = {"gpus_per_replica": 0.0 if cpu else 1.0, "cpus_per_replica": CPU_APP_CPUS if cpu else GPU_APP_CPUS,
                   "ingress_cpus": CPU_APP_CPUS if cpu else GPU_APP_CPUS}
        return self.model_copy(update={k: v for k, v in default.items() if getattr(self, k) is None})

    def needs(self) -> dict[str, float]:
        """Ray resources the ingress and `min_replicas` replicas ask for (resolved options)."""
        return {"CPU": self.ingress_cpus + self.min_replicas * self.cpus_per_replica,
                "GPU": self.min_replicas * self.gpus_per_replica}

    def shortfall(self, available: dict[str, float]) -> str:
        """What `available` (Ray's `cluster_resources()`) lacks for `needs()`, in words; '' if nothing."""
        lacking = []
        for resource, per_replica, ingress in (("CPU", self.cpus_per_replica, self.ingress_cpus),
                                               ("GPU", self.gpus_per_replica, 0.0)):
            need, have = self.needs()[resource], available.get(resource, 0.0)
            if need > have + 1e-9:
                lacking.append(f"{need:g} {resource}s ({self.min_replicas} replicas x {per_replica:g}"
                               + (f" + the ingress {ingress:g}" if ingress else "") + f"), the cluster has {have:g}")
        return "; ".join(lacking)


def build(options: ClusterOptions | dict):
    """The Serve application of `options` (a Serve app builder: `serve run` and serve.yaml call it
    with the arguments as a dict)."""
    from app import parse_args

    options = options if isinstance(options, ClusterOptions) else ClusterOptions.model_validate(options or {})
    argv = options.argv()
    args = parse_args(argv)  # the app's own checks of its flags, on the driver, before anything starts
    options = options.resolved(args.device)
    _warn_if_too_small(options)
    scaling = ({"num_replicas": options.min_replicas} if options.min_replicas >= options.max_replicas else
               {"autoscaling_config": {"min_replicas": options.min_replicas, "max_replicas": options.max_replicas,
                                       "target_ongoing_requests": options.target_ongoing_requests}})
    replicas = WorkerReplica.options(
        ray_actor_options={"num_gpus": options.gpus_per_replica, "num_cpus": options.cpus_per_replica},
        max_ongoing_requests=args.max_queue, max_queued_requests=args.max_queue,
        health_check_period_s=options.health_check_period_s, health_check_timeout_s=options.health_check_timeout_s,
        **scaling)
    board = HealthBoard.bind(stale_s=max(5.0, 5 * options.report_s))
    rules = HealthRules(loop_timeout_s=options.loop_timeout_s, recovery_timeout_s=options.recovery_timeout_s)
    ingress = Ingress.options(ray_actor_options={"num_cpus": options.ingress_cpus}, max_ongoing_requests=10_000)
    return ingress.bind(argv, replicas.bind(argv, board, rules, options.report_s), board,
                        refresh_s=options.report_s)


def _warn_if_too_small(options: ClusterOptions) -> None:
    """Log the shortfall when a running Ray cannot place the ingress and `min_replicas` replicas."""
    import ray

    if ray.is_initialized():
        shortfall = options.shortfall(ray.cluster_resources())
        if shortfall:
            log.warning("the application cannot become ready on this Ray cluster as it is: it needs %s; lower "
                        "min_replicas or cpus_per_replica/gpus_per_replica, or add nodes", shortfall)
