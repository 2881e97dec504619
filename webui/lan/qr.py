"""QR codes of the phone URL, made by `segno`: as text for the console (Unicode half blocks, two
rows of modules per line; light modules are drawn, so it reads on a dark terminal) and as an SVG
data URI for the page.
"""

from __future__ import annotations

import io

import segno


def _code(url: str) -> segno.QRCode:
    return segno.make(url, error="m", micro=False)


def qr_text(url: str) -> str:
    """The QR code of `url` as lines of text (a quiet zone of 2 modules around it)."""
    out = io.StringIO()
    _code(url).terminal(out=out, compact=True, border=2)
    return out.getvalue().rstrip("\n")


def qr_data_uri(url: str) -> str:
    """The QR code of `url` as an SVG data URI (black on white, a quiet zone of 4 modules)."""
    return _code(url).svg_data_uri(scale=6, border=4, dark="#000", light="#fff", omitsize=False)
