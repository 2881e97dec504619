"""What serving to phones on the network needs, decided once at start: `lan_serving` (for `--lan`:
the certificate, the login, the URLs), `network_link` (the URLs of any app bound beyond loopback)
and `console_banner`, the block printed at start (URLs, the first one's QR code, the login).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..openai_api.access import is_loopback
from .certificate import ensure_certificate
from .login import kept_login
from .names import local_names
from .qr import qr_data_uri, qr_text

EVERY_INTERFACE = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class PhoneLink:
    """urls: where a phone on the network opens the page, best first; self_signed: the phone
    must accept the certificate once; secure: served over HTTPS (the microphone works)."""

    urls: tuple[str, ...]
    secure: bool
    self_signed: bool = False

    @property
    def qr_data_uri(self) -> str:
        return qr_data_uri(self.urls[0]) if self.urls else ""


@dataclass(frozen=True)
class LanServing:
    """`--lan` resolved: TLS files, the page's login ("user:pass"), and whether that login was
    generated (printed at start) rather than given."""

    certfile: Path
    keyfile: Path
    auth: str
    generated_login: bool
    link: PhoneLink


def lan_serving(folder: str | Path, host: str, port: int, auth: str | None = None, certfile: str | None = None,
                keyfile: str | None = None) -> LanServing:
    """The certificate (kept in `folder`, made or renewed as needed, unless `certfile`/`keyfile`
    are given), the login (`auth`, else one kept in `folder`) and the phone link of `host`."""
    names = local_names()
    if certfile and keyfile:
        files, self_signed = (Path(certfile), Path(keyfile)), False
    else:
        made = ensure_certificate(folder, names)
        files, self_signed = (made.certfile, made.keyfile), True
    login = auth or kept_login(folder)[0]
    link = network_link(host, port, secure=True) or PhoneLink((), secure=True)
    link = replace(link, self_signed=self_signed)
    return LanServing(*files, auth=login, generated_login=not auth, link=link)


def network_link(host: str, port: int, secure: bool) -> PhoneLink | None:
    """The phone link of an app bound to `host`, or None when only this machine can reach it."""
    scheme = "https" if secure else "http"
    if host in EVERY_INTERFACE:
        return PhoneLink(tuple(local_names().urls(port, scheme)), secure=secure)
    if is_loopback(host):
        return None
    return PhoneLink((f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}/",), secure=secure)


def console_banner(link: PhoneLink, login: str | None = None) -> str:
    """The text printed at start: the URLs, the QR code of the first, how to log in."""
    if not link.urls:
        return "No network address found: the app is reachable on this machine only."
    lines = ["Open on your phone (same network):", *(f"  {url}" for url in link.urls), "", qr_text(link.urls[0]), ""]
    if link.self_signed:
        lines.append("The certificate is self-signed: the phone warns once; accept it to go on.")
    if not link.secure:
        lines.append("Plain http: phones may not record here; start with --lan for HTTPS.")
    if login:
        user, _, password = login.partition(":")
        lines.append(f"Log in as {user} with the password {password} (kept in the cache folder).")
    return "\n".join(lines)
