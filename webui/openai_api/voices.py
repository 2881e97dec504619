"""`/v1/audio/voices`: the voice library over HTTP. Voices belong to the API key that saved them
(ApiAccess.owner): another key neither lists, uses nor deletes them, nor do the page's visitors.

- `POST /v1/audio/voices` (multipart: `file` - or OpenAI's `audio_sample` -, `name`, optional
  `transcript`; OpenAI's `consent` is accepted and ignored): the recording goes through the same
  prompt checks as the page (size limit before it is read in full, decoding, the worker's
  length, silence and level checks) and is saved under its name (a name that exists is
  replaced). Answers the voice object.
- `GET /v1/audio/voices`: `{"object": "list", "data": [voice, ...]}`, most recently used first.
- `DELETE /v1/audio/voices/{id}`: `{"id", "object": "audio.voice.deleted", "deleted": true}`, 404
  for an unknown id.

Without a `transcript` the worker's speech recogniser transcribes the recording, and the voice
object's `transcript` (the one the library stores) is what it heard; when it hears nothing or
cannot run (switched off, not downloadable) the transcript is empty and the voice clones
cross-lingually.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from worker import protocol as P

from .. import messages as M
from ..synthesis import VOICE_NOT_FOUND, Synthesis, SynthesisError
from ..voices import MAX_NAME_CHARS, clean_name
from .errors import APIError
from .events import read_body
from .schemas import voice_object

FORM_SLACK_BYTES = 64 * 1024  # the form's other fields and its boundaries
MAX_TRANSCRIPT_CHARS = 2000


class VoicesRoutes:
    def __init__(self, synthesis: Synthesis, owner: Callable[[Request], str]):
        self.synthesis, self.owner = synthesis, owner  # owner: whose voices a call sees

    async def create(self, request: Request) -> dict:
        lang = M.language(request)
        limit = self.synthesis.limits.max_upload_bytes
        body = await read_body(request, limit + FORM_SLACK_BYTES, "The upload")
        form = await _form(request, body)
        try:
            return await self._create(form, lang, self.owner(request))
        finally:
            await form.close()

    async def _create(self, form, lang: str, owner: str) -> dict:
        upload = form.get("file") or form.get("audio_sample")
        if not isinstance(upload, UploadFile):
            raise APIError(400, "Send the recording as the multipart field 'file'.", P.BAD_INPUT, "file")
        try:
            name = clean_name(str(form.get("name") or ""))
        except ValueError:
            raise APIError(400, M.notice("need_voice_name", lang), P.BAD_INPUT, "name") from None
        transcript = " ".join(str(form.get("transcript") or "").split())
        if len(transcript) > MAX_TRANSCRIPT_CHARS:
            raise APIError(400, f"The transcript has {len(transcript)} characters; the limit is "
                                f"{MAX_TRANSCRIPT_CHARS}.", P.BAD_INPUT, "transcript")
        info = await run_in_threadpool(self._save, owner, upload, name, transcript, lang)
        return voice_object(info)

    def _save(self, owner: str, upload: UploadFile, name: str, transcript: str, lang: str):
        suffix = Path(upload.filename or "").suffix[:8]
        with tempfile.TemporaryDirectory(prefix="cosyfast-voice-") as folder:
            path = Path(folder) / f"recording{suffix}"
            upload.file.seek(0)
            path.write_bytes(upload.file.read())
            try:
                prompt = self.synthesis.voice_from_file(path, transcript, lang)
            except SynthesisError as e:
                raise APIError.of(e, "file") from None
        return self.synthesis.voices.save(owner, name, prompt)

    async def list(self, request: Request) -> dict:
        voices = self.synthesis.voices.list(self.owner(request))
        return {"object": "list", "data": [voice_object(info) for info in voices]}

    async def delete(self, voice_id: str, request: Request) -> dict:
        if not self.synthesis.voices.delete(self.owner(request), voice_id):
            raise APIError(404, f"{M.notice('voice_missing', M.language(request))} (voice {voice_id!r})",
                           VOICE_NOT_FOUND, "voice_id")
        return {"id": voice_id, "object": "audio.voice.deleted", "deleted": True}


async def _form(request: Request, body: bytes):
    """The multipart form of an already read body (at most one file, a few fields)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise APIError(400, "Send a multipart/form-data body (fields file, name, transcript).", P.BAD_INPUT)
    replayed = False

    async def receive():
        nonlocal replayed
        if replayed:
            return {"type": "http.disconnect"}
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, receive).form(max_files=1, max_fields=8,
                                                          max_part_size=MAX_NAME_CHARS * 4 + MAX_TRANSCRIPT_CHARS * 4)
    except Exception as e:  # python-multipart's and Starlette's parse errors
        raise APIError(400, f"The multipart body could not be read: {e}", P.BAD_INPUT) from None
