"""app.py as a user runs it: flags, /health, the UI behind --auth, no torch in the app process,
worker logs in the app's log, recovery seen through /health, and a clean stop on SIGTERM."""

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psutil

from tests.app_server import free_port
from tests.conftest import ROOT

APP = [sys.executable, str(ROOT / "app.py")]


CREDENTIALS = {"Authorization": "Basic " + base64.b64encode(b"user:secret").decode()}  # --auth user:secret


def get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def health(port: int) -> dict:
    return json.loads(get(f"http://127.0.0.1:{port}/health", CREDENTIALS)[1])


def wait_for(condition, timeout: float):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = condition()
            if value:
                return value
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_help_explains_every_flag():
    out = subprocess.run(APP + ["--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--model-dir", "--demo", "--backend", "--device", "--host", "--port", "--auth", "--max-queue",
                 "--hang-timeout", "--log-level", "--ssl-certfile", "--ssl-keyfile", "--max-upload-mb",
                 "--voices-dir", "--max-text-chars", "--max-prompt-seconds", "--min-prompt-seconds", "--lan"):
        assert flag in out
    assert "127.0.0.1" in out and "7860" in out


def test_limit_flags_that_cannot_hold_are_refused_by_name():
    for flags in (["--max-prompt-seconds", "40"], ["--min-prompt-seconds", "5", "--max-prompt-seconds", "4"],
                  ["--max-text-chars", "0"]):
        run = subprocess.run(APP + flags, capture_output=True, text=True)
        assert run.returncode == 2 and "limits:" in run.stderr, (flags, run.stderr)


def test_idle_release_takes_minutes_above_zero():
    from app import parse_args, supervisor_config

    assert supervisor_config(parse_args(["--idle-release-minutes", "2.5"])).idle_release_s == 150.0
    for minutes in ("0", "-1", "nan"):
        run = subprocess.run(APP + ["--idle-release-minutes", minutes], capture_output=True, text=True)
        assert run.returncode == 2 and "--idle-release-minutes takes a number of minutes above 0" in run.stderr, \
            (minutes, run.stderr)


def test_the_llm_kernels_flag_reaches_the_worker():
    from app import parse_args, supervisor_config

    assert supervisor_config(parse_args(["--llm-kernels", "triton"])).worker.llm_kernels == "triton"
    run = subprocess.run(APP + ["--llm-kernels", "cuda"], capture_output=True, text=True)
    assert run.returncode == 2 and "--llm-kernels" in run.stderr


def test_the_decode_step_and_prefix_flags_reach_the_worker_and_bad_values_are_refused():
    from app import parse_args, supervisor_config

    policy = supervisor_config(parse_args(["--decode-steps", "4", "--prefix-cache-mb", "0"])).worker.policy
    assert (policy.decode_steps, policy.prefix_cache_mb) == (4, 0)
    for flags, message in ((["--decode-steps", "0"], "decode_steps must be at least 1"),
                           (["--prefix-cache-mb", "-1"], "prefix_cache_mb must be 0 (off) or more")):
        run = subprocess.run(APP + flags, capture_output=True, text=True)
        assert run.returncode == 2 and message in run.stderr, (flags, run.stderr)


def test_lan_on_a_loopback_host_is_refused():
    for host in ("127.0.0.1", "localhost", "::1"):
        run = subprocess.run(APP + ["--lan", "--host", host], capture_output=True, text=True)
        assert run.returncode == 2 and "--lan serves the network" in run.stderr, (host, run.stderr)


def test_every_flag_default_is_its_dataclass_default():
    """A worker started without flags is booted, watched and bounded exactly as the dataclasses
    say (the flags take their defaults from them), and the page follows as many generations at
    once as the workers decode (WorkerConfig.rows, the worker's own rule)."""
    from dataclasses import fields

    from app import decode_rows, parse_args, supervisor_config
    from webui.voices import DEFAULT_TTL_S, VoiceLibrary
    from worker.protocol import CPU_ROWS, WorkerConfig
    from worker.supervisor import SupervisorConfig

    config, plain = supervisor_config(parse_args(["--device", "cpu"])), SupervisorConfig(worker=WorkerConfig(device="cpu"))
    for f in fields(SupervisorConfig):
        if f.name != "worker":
            assert getattr(config, f.name) == getattr(plain, f.name), f.name
    for f in fields(WorkerConfig):
        assert getattr(config.worker, f.name) == getattr(plain.worker, f.name), f.name
    assert parse_args([]).voice_ttl_days * 86400 == DEFAULT_TTL_S == VoiceLibrary.__init__.__defaults__[0]
    assert decode_rows(parse_args(["--device", "cpu", "--workers", "2"])) == 2 * CPU_ROWS
    assert decode_rows(parse_args(["--device", "cpu", "--workers", "2", "--max-active", "3"])) == 6
    assert WorkerConfig().rows(cuda=False) == CPU_ROWS


def test_app_serves_health_and_ui_recovers_the_worker_and_stops_it(tmp_path):
    port = free_port()
    log_path = tmp_path / "app.log"
    env = dict(os.environ, COSYFAST_CACHE=str(tmp_path / "cache"))
    with open(log_path, "w") as log_file:
        app = subprocess.Popen(APP + ["--demo", "--port", str(port), "--auth", "user:secret", "--hang-timeout", "5"],
                               stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        report = wait_for(lambda: health(port)["status"] == "ok" and health(port), 120)
        worker = report["worker"]
        for key in ("pid", "state", "uptime_s", "restarts", "last_restart_cause", "backends"):
            assert key in worker
        assert worker["state"] == "ready" and worker["restarts"] == 0 and worker["demo"] is True
        assert set(worker["backends"]) >= {"llm", "flow", "hift"}
        assert report["queue_depth"] == 0 and report["inflight"] == 0
        assert get(f"http://127.0.0.1:{port}/config")[0] == 401  # the UI is behind --auth
        assert json.loads(get(f"http://127.0.0.1:{port}/health")[1]) == {"status": "ok"}  # /health: its status

        maps = open(f"/proc/{app.pid}/maps").read()
        assert "libtorch" not in maps and "torch" not in psutil.Process(app.pid).cmdline()
        assert f"cosyfast-worker[{worker['pid']}] worker: ready" in log_path.read_text()

        os.kill(worker["pid"], signal.SIGKILL)
        after = wait_for(lambda: health(port)["worker"]["restarts"] == 1 and health(port)["status"] == "ok"
                         and health(port), 60)
        assert after["worker"]["last_restart_cause"] == "crashed" and after["worker"]["pid"] != worker["pid"]

        new_worker = psutil.Process(after["worker"]["pid"])
        t0 = time.monotonic()
        app.send_signal(signal.SIGTERM)
        gone, _ = psutil.wait_procs([new_worker], timeout=5)
        assert new_worker in gone and time.monotonic() - t0 < 5
        assert app.wait(10) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a graceful stop
        assert "Finished server process" in log_path.read_text()
    finally:
        app.kill()
        app.wait()
