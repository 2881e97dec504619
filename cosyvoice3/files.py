"""Writing a file so that a crash never leaves half of it: `atomic_write`; putting finished work
(a file or a folder made beside its place) into place: `replace_with`.

The new content goes to a temporary file in the same folder (a name of its own, so writers never
share one), is flushed and fsynced, then renamed over the target with `os.replace`, and the folder
is fsynced so the rename itself survives a power cut. A process killed at any point leaves either
the old file whole or the new one whole, plus at most a stray `.<name>.<random>.tmp` that
`remove_stale_temporaries` sweeps. Torch-free: the app process, the worker and the engine cache
all write through it. `replace_with` is the same rename for work that has its own temporary
name (a download's `.part` file or `.partial` folder, a model folder being built): synced, then
renamed over the target (a folder there is removed first), then the folder synced.

`exclusive(path)`: work that several processes may start at once (the workers of one app
building the demo model, downloading the model, building an engine) is done by one of them while
the others wait, then find it done: an advisory lock (`flock`) on the file `path`, released when
the holder ends, even by a kill.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

TEMP_SUFFIX = ".tmp"


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], mode: int = 0o644) -> None:
    """Replace `path` with what `write(file)` writes into a binary file object."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)


def replace_with(done: str | Path, path: str | Path) -> Path:
    """Put the finished file or folder `done` in the place of `path` (what was there goes) in
    one rename, durable: the file (or every file of the folder) synced first, the parent after."""
    done, path = Path(done), Path(path)
    for file in ([done] if done.is_file() else [p for p in done.rglob("*") if p.is_file()]):
        with open(file, "rb") as f:
            os.fsync(f.fileno())
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    os.replace(done, path)
    _fsync_folder(path.parent)
    return path


@contextlib.contextmanager
def exclusive(lock_path: str | Path) -> Iterator[None]:
    """Hold the exclusive lock of the file `lock_path` (created, with its folder, if missing) for
    the block; another process's `exclusive` on the same file waits until then."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def lock_beside(path: str | Path) -> Path:
    """The lock file of the work whose result is `path`: `.<name>.lock` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def remove_stale_temporaries(folder: str | Path, older_than_s: float = 3600.0) -> int:
    """Delete the temporary files of writes that were killed (older than `older_than_s`, so a
    write in progress in another process is left alone); returns how many were removed."""
    cutoff = time.time() - older_than_s
    removed = 0
    for tmp in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            if tmp.is_file() and tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                removed += 1
    return removed


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # not every platform opens folders
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
