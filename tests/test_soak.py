"""The soak benchmark, two minutes of it: the real app under page and API clients with a worker
kill every minute loses no request and leaves no process behind (bench/soak.py; the 30-minute
figures are in docs/reliability.md)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_two_minutes_with_a_kill_every_minute_lose_nothing(tmp_path):
    run = subprocess.run([sys.executable, "bench/soak.py", "--users", "2", "--minutes", "2", "--kill-every", "60",
                          "--warmup-s", "20", "--keep", str(tmp_path / "soak")],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert run.returncode == 0, (report, run.stderr[-2000:])
    assert report["lost"] == 0 and report["audio"] >= 2 and report["kills"] >= 1
    assert report["sent"] == report["audio"] + report["clear_failures"] + report["broken_streams"]
    assert report["restarts"] >= report["kills"] and report["leftover_processes"] == []
