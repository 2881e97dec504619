"""Who may do what over HTTP: the one owner of the server's access rules.

- Logins: `LoginThrottleMiddleware` counts every `POST /login` (the page's login form and
  gradio_client's `auth=`) per client address in a `LoginThrottle`; an address in back-off gets
  429 with Retry-After and its password is not even checked.
- `/health`: when the app has credentials (`--auth`, `--api-key`), `health_view` gives the full
  report only to a caller who shows them (HTTP Basic `user:pass`, `Authorization: Bearer <api
  key>`, or the page's login cookie); everyone else gets `{"status": ...}`. Credentials sent to
  /health count as login attempts too.

The client address is the connection's peer as uvicorn reports it (behind a reverse proxy on the
same machine uvicorn takes it from X-Forwarded-For).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
from dataclasses import dataclass, field
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from gradio.routes import App as GradioApp

from .throttle import LoginThrottle

LOGIN_PATHS = ("/login", "/login/")  # Gradio's login route, the page mounted at "/"


def client_address(scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


@dataclass(frozen=True)
class Credentials:
    """users: --auth names and their passwords; api_keys: the API's keys (--api-key,
    --api-key-file), as bytes."""

    users: dict[str, str] = field(default_factory=dict)
    api_keys: tuple[bytes, ...] = ()

    @classmethod
    def from_flags(cls, auth: str | None, api_keys=()) -> "Credentials":
        users = dict([auth.split(":", 1)]) if auth else {}
        return cls(users, tuple(k if isinstance(k, bytes) else k.encode("utf-8") for k in api_keys if k))

    @property
    def required(self) -> bool:
        return bool(self.users or self.api_keys)

    def gradio_auth(self) -> list[tuple[str, str]] | None:
        """The `auth` argument of gr.mount_gradio_app."""
        return list(self.users.items()) or None

    def accept(self, authorization: str) -> bool:
        """Whether an Authorization header (Basic user:pass, or Bearer api key) is right."""
        scheme, _, value = (authorization or "").partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and self.api_keys and value:
            given = value.encode("utf-8")
            return sum(hmac.compare_digest(given, key) for key in self.api_keys) > 0  # every key, always
        if scheme == "basic" and self.users:
            try:
                user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            expected = self.users.get(user)
            return expected is not None and hmac.compare_digest(password.encode(), expected.encode())
        return False


class LoginThrottleMiddleware:
    """ASGI middleware: `POST /login` admitted by the throttle, its outcome reported back to it
    (200: right; 400/401: wrong); every other request passes untouched."""

    def __init__(self, app, throttle: LoginThrottle):
        self.app, self.throttle = app, throttle

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in LOGIN_PATHS:
            return await self.app(scope, receive, send)
        client = client_address(scope)
        wait = self.throttle.admit(client)
        if wait > 0:
            return await too_many_attempts(wait)(scope, receive, send)
        status = []

        async def watch(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await self.app(scope, receive, watch)
        if status and status[0] == 200:
            self.throttle.succeeded(client)


def too_many_attempts(wait_s: float) -> JSONResponse:
    seconds = max(1, math.ceil(wait_s))
    return JSONResponse({"detail": f"Too many failed logins from this address: try again in {seconds} s."},
                        status_code=429, headers={"Retry-After": str(seconds)})


def page_login_user(app: FastAPI, request: Request) -> str | None:
    """The user logged in to the page (Gradio's login cookie), or None."""
    for route in app.routes:
        gradio_app = getattr(route, "app", None)
        if isinstance(gradio_app, GradioApp):
            token = (request.cookies.get(f"access-token-{gradio_app.cookie_id}")
                     or request.cookies.get(f"access-token-unsecure-{gradio_app.cookie_id}"))
            return gradio_app.tokens.get(token) if token else None
    return None


def health_view(report: dict, request: Request, credentials: Credentials, throttle: LoginThrottle) -> dict:
    """The health report as this caller may see it: whole, or only its status."""
    if not credentials.required or page_login_user(request.app, request) is not None:
        return report
    authorization = request.headers.get("authorization")
    if authorization:
        client = client_address(request.scope)
        if throttle.admit(client) == 0 and credentials.accept(authorization):
            throttle.succeeded(client)
            return report
    return {"status": report.get("status", "error")}


def add_health_route(app: FastAPI, health: Callable[[], dict], credentials: Credentials,
                     throttle: LoginThrottle) -> None:
    """GET /health: `health()`'s report as `health_view` lets the caller see it; 503 while the
    worker is in error or stopped."""

    @app.get("/health")
    def health_endpoint(request: Request):
        report = health()
        status = 503 if report["status"] in ("error", "stopped") else 200
        return JSONResponse(health_view(report, request, credentials, throttle), status_code=status)
