"""The voice library: prepared prompts saved under a name, on disk, each voice owned by one owner.

An owner is an opaque string (access.py makes it: the `--auth` user name, or a browser's own
owner id when there is no login). Every call names the owner, and only that owner's voices are
listed, loaded, replaced or deleted: another owner's voice id finds nothing.

Layout: `<root>/<owner key>/<voice id>.npz`, where the owner key is a hash of the owner (no user
name appears on disk). One file per voice holds the `PreparedPrompt` arrays and a `voice` member
(JSON: name, transcript, prompt length, creation time); the file's modification time is its last
use. Each voice is written with `cosyvoice3.files.atomic_write`, so a process killed during a save
leaves the old voice whole or the new one whole, never a mix of the two. Saving a name that
exists replaces that voice. A voice not used for `ttl_s` seconds expires: it is deleted the next
time its owner's voices are listed or read (every owner's, at most every SWEEP_EVERY_S).
Unreadable files are ignored and removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cosyvoice3.files import atomic_write, remove_stale_temporaries
from cosyvoice3.frontend.prompt import PreparedPrompt

MAX_NAME_CHARS = 60
SWEEP_EVERY_S = 600.0  # how often expired voices of all owners are looked for
DEFAULT_TTL_S = 30 * 86400.0  # a voice unused this long expires (the app's --voice-ttl-days)


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
    """Saved prompts in `root`, by owner. `ttl_s` None or <= 0: voices never expire."""

    def __init__(self, root: str | Path, ttl_s: float | None = DEFAULT_TTL_S, clock=time.time):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s if ttl_s and ttl_s > 0 else None
        self._clock = clock
        self._lock = threading.Lock()
        self._swept = float("-inf")

    # ------------------------------------------------------------------ public

    def save(self, owner: str, name: str, prompt: PreparedPrompt) -> VoiceInfo:
        """Store `prompt` as `owner`'s voice `name` (trimmed, at most MAX_NAME_CHARS); the same
        name replaces that owner's voice."""
        name = clean_name(name)
        voice_id = voice_id_for(name)
        now = self._clock()
        info = VoiceInfo(voice_id, name, prompt.text, round(float(prompt.duration_s), 3), now, now)
        card = json.dumps({k: v for k, v in asdict(info).items() if k != "last_used"}, ensure_ascii=False)
        arrays = {**prompt.arrays(), "voice": np.frombuffer(card.encode("utf-8"), dtype=np.uint8)}
        path = self._path(owner, voice_id)
        with self._lock:
            atomic_write(path, lambda f: np.savez(f, **arrays))
            os.utime(path, (now, now))
        return info

    def list(self, owner: str) -> list[VoiceInfo]:
        """The owner's live voices, most recently used first (expired ones are deleted on the way)."""
        folder = self._folder(owner)
        with self._lock:
            self._expire(folder)
            voices = [info for info in (self._read_info(p) for p in sorted(folder.glob("*.npz"))) if info]
        return sorted(voices, key=lambda v: v.last_used, reverse=True)

    def load(self, owner: str, voice_id: str) -> tuple[VoiceInfo, PreparedPrompt]:
        """The owner's voice and its features; marks it used now. KeyError if the owner has none
        of that id."""
        if not _valid_id(voice_id):
            raise KeyError(voice_id)
        path = self._path(owner, voice_id)
        with self._lock:
            self._expire(path.parent)
            loaded = self._read(path, with_prompt=True)
            if loaded is None:
                raise KeyError(voice_id)
            info, prompt = loaded
            now = self._clock()
            os.utime(path, (now, now))
        return VoiceInfo(**{**asdict(info), "last_used": now}), prompt

    def delete(self, owner: str, voice_id: str) -> bool:
        """Remove the owner's voice; False if the owner has none of that id."""
        if not _valid_id(voice_id):
            return False
        path = self._path(owner, voice_id)
        with self._lock:
            existed = path.is_file()
            path.unlink(missing_ok=True)
        return existed

    # ------------------------------------------------------------------ files

    def _folder(self, owner: str) -> Path:
        return self.root / owner_key(owner)

    def _path(self, owner: str, voice_id: str) -> Path:
        return self._folder(owner) / f"{voice_id}.npz"

    def _read_info(self, path: Path) -> VoiceInfo | None:
        loaded = self._read(path, with_prompt=False)
        return loaded[0] if loaded else None

    def _read(self, path: Path, with_prompt: bool) -> tuple[VoiceInfo, PreparedPrompt | None] | None:
        """The voice in `path`, or None (and the file removed when it is damaged)."""
        try:
            last_used = path.stat().st_mtime
            with np.load(path, allow_pickle=False) as data:
                card = json.loads(bytes(data["voice"]).decode("utf-8"))
                info = VoiceInfo(**card, last_used=last_used)
                prompt = PreparedPrompt.from_arrays(data) if with_prompt else None
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile):  # not an npz, a member missing, bad JSON
            path.unlink(missing_ok=True)
            return None
        if info.voice_id != path.stem:
            path.unlink(missing_ok=True)
            return None
        return info, prompt

    def _expire(self, folder: Path) -> None:
        """Expired voices of `folder`, and every owner's at most every SWEEP_EVERY_S."""
        now = self._clock()
        folders = [folder]
        if now - self._swept >= SWEEP_EVERY_S:
            self._swept = now
            folders = [p for p in self.root.iterdir() if p.is_dir()]
        for each in folders:
            remove_stale_temporaries(each)
            if self.ttl_s is None:
                continue
            for path in each.glob("*.npz"):
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < now - self.ttl_s:
                        path.unlink()


def owner_key(owner: str) -> str:
    """The folder name of an owner's voices: a hash, so no user name appears on disk."""
    if not isinstance(owner, str) or not owner:
        raise ValueError("a voice needs an owner")
    return hashlib.sha256(owner.encode("utf-8")).hexdigest()[:32]


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
    return isinstance(voice_id, str) and re.fullmatch(r"[a-z0-9-]{1,64}", voice_id) is not None
