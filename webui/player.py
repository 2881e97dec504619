"""The streaming player component: a gr.HTML whose JavaScript (player.js) plays the audio of the
running generation through Web Audio, reading it from the stream hub with its server function
(only the streams of the browser that asks).
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from .access import viewer_of
from .stream import StreamHub

PLAYER_JS = (Path(__file__).parent / "player.js").read_text(encoding="utf-8")
PLAYER_HTML = ('<div class="cf-player" aria-live="polite"><span class="cf-state"></span> '
               '<span class="cf-detail"></span></div>')


def streaming_player(hub: StreamHub, **html_options) -> gr.HTML:
    """Render the player; `window.cosyfastPlayer.begin/stop/eventEnded` drive it from events."""

    async def read_stream(request: dict, http: gr.Request) -> dict:
        """{"id": stream id, "start": chunk index} -> StreamHub.read's answer, for the streams of
        the browser that asks (its owner cookie)."""
        request = request if isinstance(request, dict) else {}
        start = request.get("start")
        return await hub.read(str(request.get("id", "")), viewer_of(http) or "",
                              start if isinstance(start, int) and start >= 0 else 0)

    return gr.HTML(PLAYER_HTML, js_on_load=PLAYER_JS, server_functions=[read_stream], **html_options)
