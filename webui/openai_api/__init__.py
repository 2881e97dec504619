"""The OpenAI-compatible speech API, served beside the page on the same server:

    POST   /v1/audio/speech          text (or a dialogue script) -> audio in a saved voice (speech.py)
    POST   /v1/audio/captioned_speech  the same -> JSON: the audio in base64 with its captions
    POST   /v1/audio/voices          a recording -> a saved voice (voices.py)
    GET    /v1/audio/voices          the saved voices
    DELETE /v1/audio/voices/{id}     remove one
    GET    /v1/models                the loaded model

Every request goes through the web process's one synthesis routine (webui/synthesis.py) and so
through the same supervisor, queue bounds, limits, retries and resume as the page. Keys:
access.py; errors in OpenAI's shape: errors.py; encoders: audio.py; the bridge from the worker's
events to asyncio: events.py; request and answer objects: schemas.py.

    install_openai_api(app, synthesis, ApiAccess.from_flags(keys, key_file, host))

must run before the page is mounted at "/" (the mount would take the paths otherwise).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI

from ..synthesis import Synthesis
from .access import ApiAccess
from .errors import install_error_handlers
from .schemas import model_list
from .speech import SpeechRoute
from .voices import VoicesRoutes

__all__ = ["ApiAccess", "install_openai_api"]


def install_openai_api(app: FastAPI, synthesis: Synthesis, access: ApiAccess) -> None:
    """Add the /v1 routes and the OpenAI-shaped error handlers to `app`."""
    router = APIRouter(prefix="/v1", dependencies=[Depends(access)])
    speech = SpeechRoute(synthesis, synthesis.client.health, access.owner)
    voices = VoicesRoutes(synthesis, access.owner)
    router.add_api_route("/audio/speech", speech.__call__, methods=["POST"])
    router.add_api_route("/audio/captioned_speech", speech.captioned, methods=["POST"])
    router.add_api_route("/audio/voices", voices.create, methods=["POST"])
    router.add_api_route("/audio/voices", voices.list, methods=["GET"])
    router.add_api_route("/audio/voices/{voice_id}", voices.delete, methods=["DELETE"])
    router.add_api_route("/models", lambda: model_list(), methods=["GET"])
    app.include_router(router)
    install_error_handlers(app)
