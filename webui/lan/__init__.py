"""Serving the page to a phone on the local network (`--lan`): local names (`names.py`), the
self-signed certificate (`certificate.py`), the generated login (`login.py`), QR codes (`qr.py`),
what a start decides and prints (`serving.py`) and the page's "Open on your phone" panel
(`panel.py`)."""

from .panel import panel_html
from .serving import LanServing, PhoneLink, console_banner, lan_serving, network_link

__all__ = ["LanServing", "PhoneLink", "console_banner", "lan_serving", "network_link", "panel_html"]
