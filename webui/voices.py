"""The voice library: prepared prompts saved under a name, on disk, shared by all visitors.

Each voice is two files in one folder: `<id>.npz` (the `PreparedPrompt`, saved without pickling)
and `<id>.json` (name, transcript, prompt length, creation and last-use times). Saving a name that
exists replaces that voice. A voice not used for `ttl_s` seconds expires: it is deleted the next
time the library is listed or read. Writes go through a temporary file and a rename, so a crash
never leaves half a voice behind; a voice with only one of its two files is ignored and removed.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cosyvoice3.frontend.prompt import PreparedPrompt

MAX_NAME_CHARS = 60


@dataclass(frozen=True)
class VoiceInfo:
    """What the page shows about a saved voice (the features stay on disk)."""

    voice_id: str
    name: str
    text: str
    duration_s: float
    created: float  # unix seconds
    last_used: float  # unix seconds


class VoiceLibrary:
    """Saved prompts in `root`. `ttl_s` None or <= 0: voices never expire."""

    def __init__(self, root: str | Path, ttl_s: float | None = 30 * 86400.0, clock=time.time):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s if ttl_s and ttl_s > 0 else None
        self._clock = clock
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ public

    def save(self, name: str, prompt: PreparedPrompt) -> VoiceInfo:
        """Store `prompt` under `name` (trimmed, at most MAX_NAME_CHARS); same name replaces it."""
        name = clean_name(name)
        voice_id = voice_id_for(name)
        now = self._clock()
        info = VoiceInfo(voice_id, name, prompt.text, round(float(prompt.duration_s), 3), now, now)
        with self._lock:
            prompt.save(self._npz(voice_id))
            self._write_meta(info)
        return info

    def list(self) -> list[VoiceInfo]:
        """All live voices, most recently used first (expired ones are deleted on the way)."""
        with self._lock:
            self._expire()
            voices = [info for info in (self._read_meta(p) for p in self.root.glob("*.json")) if info]
        return sorted(voices, key=lambda v: v.last_used, reverse=True)

    def load(self, voice_id: str) -> tuple[VoiceInfo, PreparedPrompt]:
        """The voice's info and features; marks it used now. KeyError if it does not exist."""
        with self._lock:
            self._expire()
            info = self._read_meta(self._json(voice_id)) if _valid_id(voice_id) else None
            if info is None:
                raise KeyError(voice_id)
            prompt = PreparedPrompt.load(self._npz(voice_id))
            info = VoiceInfo(**{**asdict(info), "last_used": self._clock()})
            self._write_meta(info)
        return info, prompt

    def delete(self, voice_id: str) -> bool:
        """Remove a voice; False if there was none."""
        if not _valid_id(voice_id):
            return False
        with self._lock:
            existed = self._json(voice_id).exists()
            self._remove(voice_id)
        return existed

    # ------------------------------------------------------------------ files

    def _npz(self, voice_id: str) -> Path:
        return self.root / f"{voice_id}.npz"

    def _json(self, voice_id: str) -> Path:
        return self.root / f"{voice_id}.json"

    def _write_meta(self, info: VoiceInfo) -> None:
        path = self._json(info.voice_id)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(info), ensure_ascii=False, indent=1), encoding="utf-8")
        tmp.replace(path)

    def _read_meta(self, path: Path) -> VoiceInfo | None:
        """None (and the files removed) when the metadata or its features are missing or damaged."""
        try:
            info = VoiceInfo(**json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            self._remove(path.stem)
            return None
        if info.voice_id != path.stem or not self._npz(info.voice_id).exists():
            self._remove(path.stem)
            return None
        return info

    def _expire(self) -> None:
        for path in self.root.glob("*.npz"):
            if not self._json(path.stem).exists():  # features without metadata: an interrupted save
                path.unlink(missing_ok=True)
        if self.ttl_s is None:
            return
        cutoff = self._clock() - self.ttl_s
        for path in self.root.glob("*.json"):
            info = self._read_meta(path)
            if info is not None and info.last_used < cutoff:
                self._remove(info.voice_id)

    def _remove(self, voice_id: str) -> None:
        self._json(voice_id).unlink(missing_ok=True)
        self._npz(voice_id).unlink(missing_ok=True)


def clean_name(name: str) -> str:
    """Collapse whitespace; ValueError when nothing is left."""
    name = " ".join((name or "").split())[:MAX_NAME_CHARS]
    if not name:
        raise ValueError("a voice needs a name")
    return name


def voice_id_for(name: str) -> str:
    """A file-safe id: an ASCII slug of the name plus a short hash (names may be Chinese)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:32]
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:10]
    return f"{slug}-{digest}" if slug else digest


def _valid_id(voice_id: str) -> bool:
    return bool(re.fullmatch(r"[a-z0-9-]{1,64}", voice_id or ""))
