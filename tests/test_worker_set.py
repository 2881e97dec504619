"""`WorkerSet` (worker/workers.py), the face the web side uses: a Supervisor, a Router and
ServeWorkers (ray_serve/workers.py) all have it, and WorkerClient takes any of them."""

import inspect

import pytest

from worker.client import WorkerClient
from worker.router import Router
from worker.supervisor import Supervisor, SupervisorConfig
from worker.workers import WorkerSet

FACE = ("start", "stop", "submit", "cancel", "health", "state", "wait_for")


def _face_of(cls) -> None:
    for name in FACE:
        assert hasattr(cls, name), f"{cls.__name__} lacks {name}"
        ours, declared = getattr(cls, name), getattr(WorkerSet, name)
        if isinstance(declared, property):
            assert isinstance(ours, property), f"{cls.__name__}.{name} is not a property"
            continue
        wanted = [p for p in inspect.signature(declared).parameters.values() if p.name != "self"]
        theirs = inspect.signature(ours).parameters
        for p in wanted:  # every argument the web side may pass is taken, by position and name
            assert p.name in theirs, f"{cls.__name__}.{name} lacks argument {p.name}"
            if p.default is not inspect.Parameter.empty:
                assert theirs[p.name].default is not inspect.Parameter.empty


def test_the_protocol_names_the_face():
    assert set(FACE) <= set(dir(WorkerSet))


def test_supervisor_and_router_are_worker_sets():
    _face_of(Supervisor)
    _face_of(Router)
    supervisor = Supervisor(SupervisorConfig())  # not started: nothing is spawned
    router = Router([supervisor])
    assert isinstance(supervisor, WorkerSet)
    assert isinstance(router, WorkerSet)
    assert WorkerClient(router).supervisor is router


def test_serve_workers_is_a_worker_set():
    pytest.importorskip("ray.serve")
    from ray_serve.workers import ServeWorkers

    _face_of(ServeWorkers)


def test_the_client_takes_a_worker_set():
    hint = inspect.signature(WorkerClient.__init__).parameters["supervisor"].annotation
    assert hint in (WorkerSet, "WorkerSet")
