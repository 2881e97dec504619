"""Reading QR codes back in the tests, with zxing-cpp: from the console's text (Unicode half
blocks, as webui/lan/qr.py prints them) or from an image (a screenshot of the page's code)."""

from __future__ import annotations

import io

import numpy as np

# a character of the console's code -> (upper module, lower module); True = light (drawn)
HALF_BLOCKS = {"█": (True, True), "▀": (True, False), "▄": (False, True), " ": (False, False)}
QR_CHARS = frozenset(HALF_BLOCKS)


def qr_lines(console: str) -> list[str]:
    """The lines of the first QR code printed in `console` (lines made only of half blocks)."""
    lines, started = [], False
    for line in console.splitlines():
        is_code = bool(line.strip()) and set(line) <= QR_CHARS and "█" in line
        if is_code:
            lines.append(line)
            started = True
        elif started:
            break
    return lines


def decode_text_qr(lines: list[str], scale: int = 8) -> list[str]:
    """What the QR code drawn in `lines` says (every code found)."""
    width = max(len(line) for line in lines)
    rows = []
    for line in lines:
        halves = [HALF_BLOCKS[ch] for ch in line.ljust(width)]
        rows.append([upper for upper, _ in halves])
        rows.append([lower for _, lower in halves])
    light = np.array(rows, dtype=bool)
    image = np.where(light, 255, 0).astype(np.uint8)
    image = np.pad(image, 4, constant_values=255)  # a quiet zone whatever the printed border
    return decode_image(np.kron(image, np.ones((scale, scale), dtype=np.uint8)))


def decode_image(image) -> list[str]:
    """What the QR codes in `image` (PNG bytes, a PIL image or a uint8 array) say."""
    import zxingcpp

    if isinstance(image, bytes):
        from PIL import Image

        image = Image.open(io.BytesIO(image)).convert("L")
    return [result.text for result in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)]
