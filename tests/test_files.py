"""cosyvoice3.files.atomic_write: the old file stays whole when a write fails, nothing is left
behind, and temporaries of killed writers are swept once they are old; `replace_with` puts a
finished file or folder in place of the old one in one rename."""

import os
import time

import pytest

from cosyvoice3.files import atomic_write, remove_stale_temporaries, replace_with


def test_a_write_replaces_the_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "sub" / "state.json"
    atomic_write(path, lambda f: f.write(b"one"))
    atomic_write(path, lambda f: f.write(b"two"))
    assert path.read_bytes() == b"two" and os.listdir(path.parent) == ["state.json"]
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_a_write_that_fails_midway_keeps_the_old_file(tmp_path):
    path = tmp_path / "state.json"
    atomic_write(path, lambda f: f.write(b"old"))

    def half_then_fail(f):
        f.write(b"new, but only ha")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["state.json"]


def test_temporaries_of_killed_writers_are_swept_when_old(tmp_path):
    stale, fresh = tmp_path / ".voice.npz.abc.tmp", tmp_path / ".voice.npz.def.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    hour_ago = time.time() - 3601
    os.utime(stale, (hour_ago, hour_ago))
    (tmp_path / "voice.npz").write_bytes(b"kept")
    assert remove_stale_temporaries(tmp_path) == 1
    assert sorted(os.listdir(tmp_path)) == [".voice.npz.def.tmp", "voice.npz"]


def test_finished_work_replaces_a_file_or_a_whole_folder(tmp_path):
    part, path = tmp_path / "llm.pt.part", tmp_path / "llm.pt"
    path.write_bytes(b"old")
    part.write_bytes(b"new")
    assert replace_with(part, path) == path and path.read_bytes() == b"new" and not part.exists()

    folder, building = tmp_path / "model", tmp_path / "model.building-1"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "stale.bin").write_bytes(b"old")
    (building / "sub").mkdir(parents=True)
    (building / "sub" / "fresh.bin").write_bytes(b"new")
    replace_with(building, folder)
    assert [p.name for p in folder.rglob("*")] == ["sub", "fresh.bin"] and not building.exists()
