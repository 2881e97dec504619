"""`POST /v1/audio/speech`: text in a saved voice, streamed as it is made.

The request goes through the web process's one synthesis routine (checks, the worker message,
the supervisor's queue bounds, retries and resume). The answer starts when the first audio chunk
exists, so a failure before any audio (unknown voice, bad input, a full queue, the worker
recovering) still gets its status and an OpenAI-shaped error body. After that:
- `stream_format: "audio"`: the encoded bytes as they come; a failure mid-way ends the transfer
  without its last chunk, so the client sees a broken download, never a short file as whole;
- `stream_format: "sse"`: `speech.audio.delta` events (base64 of the encoded bytes), then
  `speech.audio.done` with usage (input_tokens: characters of the input; output_tokens: speech
  tokens) and, beyond OpenAI's fields, `timing` (first_chunk_s: from submission to the first
  chunk in this process; worker_first_chunk_s: the same inside the worker), or an `error` event
  with the error object.
A client that disconnects, before or during the stream, cancels its request in the worker.

`input` may be a dialogue script (webui/script.py: `[voice:NAME]`, `[pause:0.8s]`,
`[instruction:...]`); `voice` is then the voice of text before any voice tag, the lines run as one
stream (webui/script_run.py), and unknown voice names are a 400 naming their lines, before any work.
`POST /v1/audio/captioned_speech` takes the same body and answers JSON once the audio is whole:
{"audio": base64, "format", "sample_rate", "captions": [{"start", "end", "text", "voice"}], "srt",
"vtt"}, one cue per text segment (sentence), timed from the samples produced (webui/captions.py).
With `"takes": N` (webui/takes.py: 1 to 4, seeds `take_seeds(seed, N)`) it answers
{"takes": [{"seed", "audio", "format", "sample_rate", "captions", "srt", "vtt"}, ...]} in seed order
- a list even for `"takes": 1`, since the caller asked for takes; absent or null: the one object
above. The N requests are submitted at once, so the worker decodes them in one batch; X-Request-Id
lists their ids, comma-separated. A number out of range (or not a whole number) is a 400 worded as
the page's, `param` `takes`; takes with a script, or on `/v1/audio/speech` (one stream, one take),
are a 400 too. A client that leaves cancels every take.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Callable

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from cosyvoice3.modes import INSTRUCT, ZERO_SHOT
from cosyvoice3.spec import SpeechSpec
from worker import protocol as P

from .. import messages as M
from ..access import text_body_bytes
from ..captions import to_json, to_srt, to_vtt
from ..script import is_script
from ..script_run import ScriptRun, ScriptVoice, prepare_script
from ..synthesis import VOICE_NOT_FOUND, Synthesis, SynthesisError, SynthesisRun
from ..takes import checked_takes, start_takes
from ..voices import clean_name, voice_id_for
from .audio import FFMPEG_OUTPUTS, MEDIA_TYPES, encode, ffmpeg_missing
from .errors import APIError, validation_error
from .events import ClientGone, RunEvents, read_body, until_disconnect
from .schemas import SpeechRequest

log = logging.getLogger("webui.openai_api")

STATE_RETRY_S = {"starting": 10, "recovering": 5}


class StreamAborted(Exception):
    """The audio stopped mid-way: the transfer must end without its final chunk."""


class AbortableStreamingResponse(StreamingResponse):
    """A streaming response that, on StreamAborted, leaves the transfer unfinished (the server
    then closes the connection) instead of ending it as if the audio were whole."""

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except StreamAborted as e:
            log.warning("speech stream ended early: %s", e)


class SpeechRoute:
    def __init__(self, synthesis: Synthesis, health, owner: Callable[[Request], str]):
        self.synthesis, self.health, self.owner = synthesis, health, owner  # owner: whose voices a call uses

    async def __call__(self, request: Request) -> Response:
        speech, lang, owner = await self._read(request)
        if speech.takes is not None:
            raise APIError(400, M.notice("takes_not_streamed", lang), P.BAD_INPUT, "takes")
        run, _ = self._start(speech, lang, owner)
        events = RunEvents(run, lang)
        try:
            first = await until_disconnect(request, events.first_chunk())
        except ClientGone:
            events.close()
            log.info("the client left before the first audio; request %s cancelled", events.run.request_id)
            return Response(status_code=499)
        except BaseException:
            events.close()
            raise
        headers = {"X-Request-Id": events.run.request_id, "Cache-Control": "no-store"}
        if speech.stream_format == "sse":
            return AbortableStreamingResponse(self._sse(events, speech, first.sample_rate), headers=headers,
                                              media_type="text/event-stream")
        return AbortableStreamingResponse(self._audio(events, speech, first.sample_rate), headers=headers,
                                          media_type=MEDIA_TYPES[speech.response_format])

    async def captioned(self, request: Request) -> Response:
        """`POST /v1/audio/captioned_speech`: the speech request's body; the whole audio (base64 of
        `response_format`) with its captions (one cue per text segment, timed from the samples); with
        `takes`, a list of such answers, one per seed."""
        speech, lang, owner = await self._read(request)
        if speech.takes is not None:
            return await self._captioned_takes(request, speech, lang, owner)
        run, voice = self._start(speech, lang, owner)
        whole = await _whole(request, [run], lang)
        if whole is None:
            return Response(status_code=499)
        return JSONResponse(await _answer(run, whole[0], voice, speech.response_format),
                            headers={"X-Request-Id": run.request_id})

    async def _captioned_takes(self, request: Request, speech: SpeechRequest, lang: str, owner: str) -> Response:
        """`takes` runs of one text (webui/takes.py), submitted at once: {"takes": [answer + its seed]}."""
        try:
            n = checked_takes(speech.takes, lang)
        except SynthesisError as e:
            raise APIError.of(e, param_of(e)) from None
        if is_script(speech.input):
            raise APIError(400, M.notice("takes_one_text", lang), P.BAD_INPUT, "takes")
        spec, info, prompt = self._request(speech, lang, owner)
        self._ensure_available()
        with start_takes(self.synthesis, spec, prompt, n, lang) as takes:
            whole = await _whole(request, takes.runs, lang)
        if whole is None:
            return Response(status_code=499)
        answers = [{"seed": run.spec.seed, **await _answer(run, parts, info.name, speech.response_format)}
                   for run, parts in zip(takes.runs, whole)]
        return JSONResponse({"takes": answers},
                            headers={"X-Request-Id": ",".join(run.request_id for run in takes.runs)})

    async def _read(self, request: Request) -> tuple[SpeechRequest, str, str]:
        """The request body, read within its bound and validated; its language and owner."""
        lang = M.language(request)
        body = await read_body(request, text_body_bytes(self.synthesis.limits.max_text_chars))
        try:
            speech = SpeechRequest.model_validate_json(body)
        except ValidationError as e:
            raise validation_error(e) from None
        return speech, lang, self.owner(request)

    def _start(self, speech: SpeechRequest, lang: str, owner: str) -> tuple[SynthesisRun | ScriptRun, str]:
        """The started run of a request (a script's lines, or one text) and its voice's name; every
        refusal (APIError) comes before anything is submitted."""
        if is_script(speech.input):
            return self._script(speech, lang, owner), ""  # each line names its voice in the captions
        spec, info, prompt = self._request(speech, lang, owner)
        self._ensure_available()
        return self.synthesis.start(spec, prompt), info.name

    def _script(self, speech: SpeechRequest, lang: str, owner: str) -> ScriptRun:
        """A script's run: the `voice` field is the voice of text before any voice tag."""
        self._check_format(speech)
        info, prompt = self._voice(speech.voice_name, lang, owner)
        default = ScriptVoice(info.name, info.text if speech.prompt_text is None else speech.prompt_text, prompt)
        asked = SpeechSpec(speech.input, seed=speech.seed, speed=speech.speed, stream=True,
                           text_frontend=speech.text_frontend)
        try:
            spec, steps = prepare_script(self.synthesis, asked, owner, lambda: default, lang)
        except SynthesisError as e:
            raise APIError.of(e, param_of(e)) from None
        self._ensure_available()
        return ScriptRun(self.synthesis, steps, spec)

    def _request(self, speech: SpeechRequest, lang: str, owner: str):
        """The checked request spec (OpenAI's fields mapped once into it) and the voice's prompt, or
        APIError."""
        self._check_format(speech)
        info, prompt = self._voice(speech.voice_name, lang, owner)
        mode = speech.mode or (INSTRUCT if speech.instructions.strip() else ZERO_SHOT)
        prompt_text = info.text if speech.prompt_text is None else speech.prompt_text
        try:
            spec = self.synthesis.check(SpeechSpec(speech.input, mode, prompt_text, speech.instructions, speech.seed,
                                                   speech.speed, stream=True, text_frontend=speech.text_frontend),
                                        lang)
        except SynthesisError as e:
            raise APIError.of(e, param_of(e)) from None
        return spec, info, prompt

    @staticmethod
    def _check_format(speech: SpeechRequest) -> None:
        if speech.response_format in FFMPEG_OUTPUTS and ffmpeg_missing():
            raise APIError(400, ffmpeg_missing(), P.BAD_INPUT, "response_format")

    def _voice(self, voice: str, lang: str, owner: str):
        """The owner's saved voice named or identified by `voice`, or APIError 404."""
        for voice_id in voice_ids(voice):
            try:
                return self.synthesis.saved_voice(owner, voice_id, lang)
            except SynthesisError:
                continue
        raise APIError(404, f"No saved voice is named {voice!r} or has that id: GET /v1/audio/voices lists them, "
                            "POST /v1/audio/voices adds one.", VOICE_NOT_FOUND, "voice")

    def _ensure_available(self) -> None:
        """503 while the worker is not ready (booting, recovering, failed to boot)."""
        report = self.health()
        if report.get("status") == "ok":
            return
        worker = report.get("worker") or {}
        state = worker.get("state", "unknown")
        why = f": {worker['boot_error']}" if worker.get("boot_error") else ""
        raise APIError(503, f"The speech engine is not ready ({state}{why}); try again shortly.", "unavailable",
                       retry_after_s=STATE_RETRY_S.get(report.get("status"), 30))

    async def _audio(self, events: RunEvents, speech: SpeechRequest, sample_rate: int) -> AsyncIterator[bytes]:
        try:
            async for data in encode(speech.response_format, sample_rate, events.pcm()):
                yield data
        except APIError as e:
            raise StreamAborted(e.message) from None
        finally:
            events.close()

    async def _sse(self, events: RunEvents, speech: SpeechRequest, sample_rate: int) -> AsyncIterator[bytes]:
        try:
            async for data in encode(speech.response_format, sample_rate, events.pcm()):
                yield sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")})
            stats = events.run.outcome.stats if isinstance(events.run.outcome, P.Done) else {}
            tokens = int(stats.get("speech_tokens") or 0)
            yield sse({"type": "speech.audio.done",
                       "usage": {"input_tokens": len(speech.input), "output_tokens": tokens,
                                 "total_tokens": len(speech.input) + tokens},
                       "timing": {"first_chunk_s": events.run.first_chunk_s,
                                  "worker_first_chunk_s": stats.get("first_chunk_s")}})
        except APIError as e:
            yield sse({"type": "error", **e.body()})
        finally:
            events.close()


async def _whole(request: Request, runs: list, lang: str) -> list[list[np.ndarray]] | None:
    """The audio chunks of every run (each drained by its own RunEvents, so all advance together),
    APIError for the first failure; None when the client left first. Every run still going is
    cancelled on the way out."""
    events = [RunEvents(run, lang) for run in runs]

    async def collect() -> list[list[np.ndarray]]:
        return [[chunk async for chunk in each.pcm()] for each in events]

    try:
        return await until_disconnect(request, collect())
    except ClientGone:
        log.info("the client left before the captioned audio was whole; request(s) %s cancelled",
                 ", ".join(run.request_id for run in runs))
        return None
    finally:
        for each in events:
            each.close()


async def _answer(run, parts: list[np.ndarray], voice: str, fmt: str) -> dict:
    """A finished run's audio (base64 of `fmt`) with its captions, as captioned_speech answers it."""
    data = b"".join([part async for part in encode(fmt, run.sample_rate, _aiter(parts))])
    found = run.cues(voice)
    return {"audio": base64.b64encode(data).decode("ascii"), "format": fmt, "sample_rate": run.sample_rate,
            "captions": to_json(found), "srt": to_srt(found), "vtt": to_vtt(found)}


async def _aiter(items):
    for item in items:
        yield item


def sse(event: dict) -> bytes:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode("utf-8")


def voice_ids(voice: str) -> list[str]:
    """The ids `voice` may mean: itself (an id), and the id of the name it may be."""
    voice = (voice or "").strip()
    try:
        by_name = voice_id_for(clean_name(voice))
    except ValueError:  # nothing but spaces
        return []
    return list(dict.fromkeys([voice, by_name]))


def param_of(error: SynthesisError) -> str | None:
    """Which request field a refusal is about (OpenAI's `param`)."""
    return error.param or {P.TOO_LONG: "input"}.get(error.code)
