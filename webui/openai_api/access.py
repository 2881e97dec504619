"""Who may use the OpenAI-compatible API: `Authorization: Bearer KEY` with a key from `--api-key`
(repeatable) or `--api-key-file` (one key a line; blank lines and `#` comments skipped).

Without any key the API is open when the server listens on loopback only, and closed (401 with
a sentence saying how to open it) when it listens on other interfaces. `--auth` (the page's
login) does not cover the API; keys do not open the page.
"""

from __future__ import annotations

import hmac
import ipaddress
from pathlib import Path

from fastapi import Request

from ..access import OPEN_API_OWNER, api_owner_of_key
from .errors import APIError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_key_file(path: str | Path) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


class ApiAccess:
    """The API keys, and whether the API is open without one (loopback and no key configured)."""

    def __init__(self, keys: list[str], host: str):
        self.keys = [key.encode("utf-8") for key in keys if key]
        self.open = not self.keys and is_loopback(host)

    @classmethod
    def from_flags(cls, keys: list[str] | None, key_file: str | None, host: str) -> "ApiAccess":
        return cls(list(keys or []) + (read_key_file(key_file) if key_file else []), host)

    def allows(self, request: Request) -> bool:
        if self.open:
            return True
        token = _bearer(request)
        if not token:
            return False
        given = token.encode("utf-8")
        # compare with every key, always, so the time taken says nothing about which one is close
        return sum(hmac.compare_digest(given, key) for key in self.keys) > 0

    def owner(self, request: Request) -> str:
        """Whose saved voices an allowed call may touch: its key's, or everyone's alike when the
        API is open without keys (a Bearer token there is no credential)."""
        return api_owner_of_key(_bearer(request)) if self.keys else OPEN_API_OWNER

    async def __call__(self, request: Request) -> None:
        """FastAPI dependency of every API route: 401 unless `allows`."""
        if self.allows(request):
            return
        if not self.keys:
            raise APIError(401, "The API is closed: this server listens beyond loopback and has no API key. "
                                "Start it with --api-key KEY (or --api-key-file FILE).", "api_key_required")
        raise APIError(401, "Missing or wrong API key: send the header 'Authorization: Bearer KEY'.",
                       "invalid_api_key")


def _bearer(request: Request) -> str:
    """The token of `Authorization: Bearer TOKEN` ('' without one)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
