"""The page's login on the network when no `--auth` is given: a user `cosyfast` with a random
password, made once and kept in a file of mode 0600 (`login`), so it stays the same across restarts.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from cosyvoice3.files import atomic_write

LOGIN_FILE = "login"
USER = "cosyfast"


def kept_login(folder: str | Path) -> tuple[str, bool]:
    """("user:password", made now?): the kept login in `folder`, or a new one written there."""
    path = Path(folder) / LOGIN_FILE
    try:
        login = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        login = ""
    user, _, password = login.partition(":")
    if user and password:
        return login, False
    login = f"{USER}:{secrets.token_urlsafe(12)}"  # 96 random bits, typeable on a phone
    atomic_write(path, lambda f: f.write(login.encode("utf-8") + b"\n"), mode=0o600)
    return login, True
