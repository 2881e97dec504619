"""serve.yaml describes the application `serve run` starts: Serve's own schema accepts the file,
its import path is our app builder, its arguments are valid ClusterOptions, and the app built from
them has the three deployments with the options the docs promise (one GPU per replica,
autoscaling on ongoing requests, the app's --max-queue as each replica's bound)."""

import importlib
import os

import pytest
import yaml

from tests.conftest import ROOT

if not os.environ.get("CI"):  # CI installs the extra
    pytest.importorskip("ray", reason="Ray is an optional extra (pip install -r requirements-ray.txt)")


def test_serve_yaml_builds_the_application():
    from ray.serve.schema import ServeDeploySchema

    from ray_serve.application import ClusterOptions, build

    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "serve.yaml").read_text()))
    (application,) = config.applications
    module, name = application.import_path.split(":")
    assert application.route_prefix == "/" and getattr(importlib.import_module(module), name) is build
    options = ClusterOptions.model_validate(application.args)
    assert options.max_replicas > options.min_replicas

    deployments = {d.name: d for d in _deployments(build(application.args))}
    assert set(deployments) == {"Ingress", "WorkerReplica", "HealthBoard"}
    replica = deployments["WorkerReplica"]
    assert replica.ray_actor_options["num_gpus"] == 1
    scaling = replica._deployment_config.autoscaling_config
    assert (scaling.min_replicas, scaling.max_replicas) == (options.min_replicas, options.max_replicas)
    assert scaling.target_ongoing_requests == options.target_ongoing_requests
    assert replica.max_ongoing_requests == 64 and replica.max_queued_requests == 64  # the yaml's --max-queue


def test_cpu_replicas_own_no_gpu_and_a_fixed_count_does_not_autoscale():
    from ray_serve.application import build

    app = build({"app_args": ["--device", "cpu", "--max-queue", "8"], "min_replicas": 2, "max_replicas": 2})
    replica = next(d for d in _deployments(app) if d.name == "WorkerReplica")
    assert replica.ray_actor_options["num_gpus"] == 0 and replica.num_replicas == 2
    assert replica._deployment_config.autoscaling_config is None and replica.max_ongoing_requests == 8


def test_the_readme_s_cpu_line_asks_for_what_two_cores_have():
    """`serve run ray_serve.application:build app_args="--demo --device cpu" min_replicas=2
    max_replicas=2`: every deployment's CPUs together fit 2 (the line used to ask for 3)."""
    from ray_serve.application import ClusterOptions, build

    args = {"app_args": "--demo --device cpu", "min_replicas": 2, "max_replicas": 2}
    asked = sum(d.ray_actor_options.get("num_cpus", 1) * (d.num_replicas or 1) for d in _deployments(build(args)))
    assert asked == 1.5
    options = ClusterOptions.model_validate(args).resolved("cpu")
    assert options.needs() == {"CPU": 1.5, "GPU": 0.0} and options.shortfall({"CPU": 2.0}) == ""
    gpu = ClusterOptions(min_replicas=2).resolved("cuda")
    assert gpu.shortfall({"CPU": 8.0, "GPU": 1.0}) == "2 GPUs (2 replicas x 1), the cluster has 1"


def test_the_app_s_own_flag_checks_stop_a_bad_configuration():
    from ray_serve.application import build

    with pytest.raises(SystemExit):  # argparse's error, before anything starts
        build({"app_args": "--auth nocolon"})


def _deployments(app):
    """The deployments bound into an application (the ingress and what its arguments bind)."""
    seen, todo = [], [app._bound_deployment]
    while todo:
        deployment = todo.pop()
        seen.append(deployment)
        todo += [a._bound_deployment for a in (*deployment.init_args, *deployment.init_kwargs.values())
                 if hasattr(a, "_bound_deployment")]
    return {d.name: d for d in seen}.values()
