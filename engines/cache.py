"""The on-disk cache of built artefacts (ONNX exports, TensorRT engines) and their keys.

An artefact is one file plus a JSON metadata file beside it. The key is the SHA-256 of the
canonical JSON of everything the artefact depends on: hashes of the model files it was made from,
the GPU name and compute capability, the TensorRT package and version, the precision, the shape
profile and our export version. The key is in the file name *and* in the metadata, and the
metadata records the artefact's own size and SHA-256, so:
- a changed model file, another GPU, another TensorRT, precision or profile gives another key:
  the old artefact is never looked at (`lookup` misses and the caller rebuilds);
- a truncated or corrupted artefact fails its hash and is deleted, never loaded;
- writes are atomic (`cosyvoice3.files`: `atomic_write` for bytes, `replace_with` for a file a
  builder wrote under a temporary name; the metadata, written last, is the commit marker), and a
  per-key lock file keeps two processes from building the same artefact.

File hashes are memoised by (path, size, mtime) in `file_hashes.json`, so a 2 GB `llm.pt` is
hashed once, not at every start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cosyvoice3.files import atomic_write, exclusive, replace_with

log = logging.getLogger(__name__)

CACHE_ENV = "COSYFAST_ENGINE_CACHE"
HASH_MEMO = "file_hashes.json"


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cosyfast" / "engines"


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def key_of(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class Entry:
    """A valid cached artefact: its file and metadata."""

    path: Path
    meta: dict


class ArtifactCache:
    """Artefacts under `root`, named `<name>-<key[:20]>.<suffix>` with `<file>.json` metadata."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    # ------------------------------------------------------------------ file hashes

    def file_hash(self, path: str | Path) -> str:
        """SHA-256 of a model file, memoised by (resolved path, size, mtime_ns)."""
        path = Path(path).resolve()
        st = path.stat()
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
        memo_path = self.root / HASH_MEMO
        memo = _read_json(memo_path) or {}
        hit = memo.get(str(path))
        if isinstance(hit, dict) and hit.get("stamp") == stamp and isinstance(hit.get("sha256"), str):
            return hit["sha256"]
        digest = sha256_file(path)
        with self._locked("file_hashes"):
            memo = _read_json(memo_path) or {}
            memo[str(path)] = {"stamp": stamp, "sha256": digest}
            data = json.dumps(memo, indent=1, sort_keys=True).encode()
            atomic_write(memo_path, lambda f: f.write(data))
        return digest

    # ------------------------------------------------------------------ artefacts

    def paths(self, name: str, fields: dict, suffix: str) -> tuple[Path, Path, str]:
        key = key_of(fields)
        path = self.root / f"{name}-{key[:20]}.{suffix}"
        return path, path.with_name(path.name + ".json"), key

    def lookup(self, name: str, fields: dict, suffix: str) -> Entry | None:
        """The valid artefact for these key fields, or None. Corrupt entries are deleted."""
        path, meta_path, key = self.paths(name, fields, suffix)
        if not meta_path.exists():
            return None
        meta = _read_json(meta_path)
        problem = _check(meta, path, key, fields)
        if problem is None:
            return Entry(path, meta)
        log.warning("engine cache: discarding %s (%s); it will be rebuilt", path.name, problem)
        self.remove(path)
        return None

    def store(self, name: str, fields: dict, suffix: str, data: bytes | None = None,
              produce: Callable[[Path], None] | None = None, extra: dict | None = None) -> Entry:
        """Store an artefact given as bytes, or written by `produce(tmp_path)`; returns its entry."""
        path, meta_path, key = self.paths(name, fields, suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            atomic_write(path, lambda f: f.write(data))
        else:
            tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
            try:
                produce(tmp)
                replace_with(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        meta = {"name": name, "key": key, "fields": fields, "file": path.name, "size": path.stat().st_size,
                "sha256": sha256_file(path), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra or {})}
        blob = json.dumps(meta, indent=1, sort_keys=True).encode()
        atomic_write(meta_path, lambda f: f.write(blob))
        return Entry(path, meta)

    def get_or_build(self, name: str, fields: dict, suffix: str,
                     build: Callable[[Path], dict | None]) -> tuple[Entry, bool]:
        """Return (entry, built): the cached artefact, or one built now by `build(tmp_path)` (which
        writes the file and may return extra metadata). Holds the key's lock while building."""
        entry = self.lookup(name, fields, suffix)
        if entry is not None:
            return entry, False
        path, _, _ = self.paths(name, fields, suffix)
        with self._locked(path.name):
            entry = self.lookup(name, fields, suffix)  # built by another process meanwhile
            if entry is not None:
                return entry, False
            extra: dict = {}

            def produce(tmp: Path) -> None:
                extra.update(build(tmp) or {})

            return self.store(name, fields, suffix, produce=produce, extra=extra), True

    def remove(self, path: Path) -> None:
        for p in (path, path.with_name(path.name + ".json")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def _locked(self, name: str) -> contextlib.AbstractContextManager[None]:
        return exclusive(self.root / f".{name}.lock")


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _check(meta: dict | None, path: Path, key: str, fields: dict) -> str | None:
    """Why a cached artefact must not be used, or None when it is valid."""
    if meta is None:
        return "unreadable metadata"
    if meta.get("key") != key or meta.get("fields") != json.loads(json.dumps(fields)):
        return "metadata of another key"
    if not path.is_file():
        return "artefact file missing"
    if path.stat().st_size != meta.get("size"):
        return f"size {path.stat().st_size} != recorded {meta.get('size')}"
    if sha256_file(path) != meta.get("sha256"):
        return "content hash differs from the recorded one (corrupt)"
    return None
