"""Errors of the OpenAI-compatible API in OpenAI's shape, with the HTTP status that fits:

    {"error": {"message": "...", "type": "invalid_request_error", "param": "input", "code": "too_long"}}

400 bad input, 401 no or a wrong API key, 404 unknown voice, 413 too long (text or upload), 429
overloaded (with Retry-After), 503 while the worker starts or recovers (with Retry-After) and when
it gave up on a request, 500 for anything else: one sentence, never a stack trace (that goes to
the server's log). `install_error_handlers(app)` makes FastAPI's own errors (an unreadable body,
a missing field) and unexpected exceptions answer in the same shape.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from worker import protocol as P

from ..messages import OTHER
from ..synthesis import VOICE_NOT_FOUND, SynthesisError

log = logging.getLogger("webui.openai_api")

RETRY_AFTER_S = {429: 1, 503: 5}
# protocol error code -> HTTP status
STATUS_OF_CODE = {P.BAD_INPUT: 400, P.TOO_LONG: 413, VOICE_NOT_FOUND: 404, P.OVERLOADED: 429,
                  P.WORKER_CRASHED: 503, P.WORKER_HUNG: 503, P.OOM: 503, P.TIMEOUT: 503, P.CANCELLED: 503,
                  P.INTERNAL: 500}
TYPE_OF_STATUS = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
                  413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}


class APIError(Exception):
    """An answer other than 200: status, one sentence, and OpenAI's `param` and `code`."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 retry_after_s: int | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.retry_after_s = retry_after_s if retry_after_s is not None else RETRY_AFTER_S.get(status)

    @classmethod
    def of(cls, error: SynthesisError, param: str | None = None) -> "APIError":
        """The answer to a refused or failed request; a prompt's problem is its `code`
        (prompt_too_short, prompt_silent, prompt_unreadable, prompt_too_long)."""
        code = error.problem if error.problem and error.problem != OTHER else error.code
        return cls(STATUS_OF_CODE.get(error.code, 500), error.sentence, code, param)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": TYPE_OF_STATUS.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(self.retry_after_s)} if self.retry_after_s else None
        if self.status == 401:
            headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def validation_error(exc: ValidationError | RequestValidationError) -> APIError:
    """The first problem of a request body, as a 400 naming the field."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "the request body could not be read"}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body",)]
    param = ".".join(loc) or None
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    return APIError(400, message, "bad_input", param)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        return validation_error(exc).response()

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return APIError(500, "Something went wrong inside the server: please try again.", P.INTERNAL).response()
