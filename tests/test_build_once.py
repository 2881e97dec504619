"""Work that the workers of one app start at once is done once (cosyvoice3.tools.once and
cosyvoice3.files.exclusive): while one process builds the demo model, another that needs it waits
on the lock beside it (seen in the kernel's /proc/locks) and then finds it built, without building
it again or removing the folder the first one is reading; the same for a download."""

import multiprocessing
import os
from pathlib import Path

import pytest

from cosyvoice3.tools.once import ensure_built
from tests.app_server import wait_until

LINUX_LOCKS = Path("/proc/locks")
pytestmark = pytest.mark.skipif(not LINUX_LOCKS.exists(), reason="waiting on a lock is seen in Linux's /proc/locks")


def build_once(out: str, log: str, building, release) -> None:
    """A process that needs the folder `out`: ensure_built it, noting in the folder `log` each
    build it did (`built-<pid>`); `building` is set when its build starts, which then waits for
    `release`."""
    def write(tmp: Path) -> None:
        building.set()
        release.wait(60)
        tmp.mkdir()
        (tmp / "content").write_text(str(os.getpid()))
        (Path(log) / f"built-{os.getpid()}").touch()

    got = ensure_built(out, lambda o: (o / "content").is_file(), write)
    (Path(log) / f"got-{os.getpid()}").write_text((got / "content").read_text())


def waits_on_a_lock(pid: int) -> bool:
    """The kernel lists process `pid` as blocked on a lock ("->" lines of /proc/locks)."""
    return any(fields[1] == "->" and str(pid) in fields
               for fields in (line.split() for line in LINUX_LOCKS.read_text().splitlines()) if len(fields) > 1)


def test_a_second_process_waits_for_the_build_and_uses_it(tmp_path):
    spawn = multiprocessing.get_context("spawn")
    out, log = tmp_path / "models" / "demo", tmp_path / "log"
    out.parent.mkdir()
    log.mkdir()
    first_building, second_building, release = spawn.Event(), spawn.Event(), spawn.Event()
    first = spawn.Process(target=build_once, args=(str(out), str(log), first_building, release))
    second = spawn.Process(target=build_once, args=(str(out), str(log), second_building, release))
    first.start()
    try:
        assert first_building.wait(60)  # the first holds the lock and builds, until released
        second.start()
        wait_until(lambda: waits_on_a_lock(second.pid) or not second.is_alive() or second_building.is_set(), 60)
        assert not second_building.is_set() and second.is_alive()  # it waits: it does not build too
    finally:
        release.set()
        for process in (first, second):
            if process.pid is not None:  # started
                process.join(60)
    assert first.exitcode == 0 and second.exitcode == 0
    assert sorted(p.name for p in log.iterdir()) == sorted([f"built-{first.pid}", f"got-{first.pid}",
                                                            f"got-{second.pid}"])
    assert {(log / f"got-{p.pid}").read_text() for p in (first, second)} == {str(first.pid)}
    assert [p.name for p in out.parent.iterdir() if not p.name.startswith(".")] == ["demo"]  # no .building-* left


def download_into(dest: str, endpoint: str) -> None:
    from cosyvoice3 import download

    download.download_model(Path(dest), [endpoint], progress=lambda *a: None)


def test_a_download_another_process_is_making_is_waited_for_not_repeated(tmp_path):
    from cosyvoice3 import download
    from cosyvoice3.files import exclusive, lock_beside
    from tests.fake_hub import FakeHub, fake_files

    files = fake_files(download.MODEL_FILES)
    hub = FakeHub(files)
    dest = tmp_path / "models" / download.MODEL_NAME
    try:
        with exclusive(lock_beside(dest)):  # this process is downloading it
            waiting = multiprocessing.get_context("spawn").Process(target=download_into,
                                                                   args=(str(dest), hub.endpoint()))
            waiting.start()
            wait_until(lambda: waits_on_a_lock(waiting.pid) or not waiting.is_alive(), 60)
            assert waiting.is_alive() and hub.requests == [] and hub.heads == []
            for name, body in files.items():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                (dest / name).write_bytes(body)
        waiting.join(60)
        assert waiting.exitcode == 0 and hub.requests == [] and hub.heads == []  # it found the model there
    finally:
        hub.close()
