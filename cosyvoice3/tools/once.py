"""Building a generated model directory once: beside its place, then renamed into it.

A half-written directory is never seen under the final name (a crash leaves only a
`<name>.building-<pid>` folder), so "the directory is there" means "it is complete". Processes
that need it at once (the workers of one app) build it once: one builds, holding the lock beside
it, the others wait and find it built.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from cosyvoice3.files import exclusive, lock_beside, replace_with


def marker_says(out: Path, marker: str, seed: int, files: tuple[str, ...]) -> bool:
    """True when `out` holds `files` and a JSON marker file naming `seed`."""
    path = out / marker
    return (path.is_file() and all((out / f).is_file() for f in files)
            and json.loads(path.read_text()).get("seed") == seed)


def ensure_built(out_dir: str | Path, is_built: Callable[[Path], bool], write: Callable[[Path], object]) -> Path:
    """`out_dir` when `is_built(out_dir)`; otherwise `write(tmp)` beside it, then rename tmp into
    place, holding the lock beside `out_dir` (a process that waited for it finds it built)."""
    out = Path(out_dir)
    if is_built(out):
        return out
    with exclusive(lock_beside(out)):
        if is_built(out):
            return out
        tmp = out.with_name(out.name + f".building-{os.getpid()}")
        write(tmp)
        return replace_with(tmp, out)
