"""`--gpus` and `--workers` as worker devices (worker/devices.py), and app.py refusing them by name
where they cannot hold (a machine that shows no GPU, both flags at once)."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from worker.devices import gpu_devices, visible_gpus, worker_devices, worker_name


def test_gpu_specs_name_the_visible_gpus():
    assert gpu_devices("all", 4) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert gpu_devices("0,2", 4) == ["cuda:0", "cuda:2"]
    assert gpu_devices("2", 4) == ["cuda:0", "cuda:1"]  # a single number is a count
    for spec, words in (("5", "shows 4 GPUs"), ("0,4", "shows 4 GPUs"), ("0", "no GPU"), ("0,0", "twice"),
                        ("some", "not 'all'")):
        with pytest.raises(ValueError, match=words):
            gpu_devices(spec, 4)
    with pytest.raises(ValueError, match="shows no GPU.*driver gone.*--workers N"):
        gpu_devices("all", 0, "driver gone")


def test_cuda_visible_devices_decides_what_cuda_will_show(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert visible_gpus() == (2, "")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus()[0] == 0 and "hides every GPU" in visible_gpus()[1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert visible_gpus()[0] == 0
    assert worker_devices(None, None, "auto") == ["auto"]
    assert worker_devices(None, 3, "cpu") == ["cpu"] * 3
    with pytest.raises(ValueError, match="does not go with --device cpu"):
        worker_devices("all", None, "cpu")
    assert [worker_name(i, ["cpu"] * 2) for i in range(2)] == ["cosyfast-worker-0", "cosyfast-worker-1"]
    assert worker_name(0, ["cpu"]) == "cosyfast-worker"
    assert worker_name(1, ["cuda:0", "cuda:2"]) == "cosyfast-worker-gpu2"


def test_app_refuses_gpus_it_cannot_see_and_both_flags_at_once():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU visible, whatever the machine has
    run = subprocess.run([sys.executable, "app.py", "--demo", "--gpus", "all"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert "shows no GPU to run workers on" in run.stderr and "--workers N" in run.stderr
    run = subprocess.run([sys.executable, "app.py", "--gpus", "1", "--workers", "2"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "not allowed with argument" in run.stderr, run.stderr
