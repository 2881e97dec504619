"""Who may do what over HTTP: the one owner of the server's access rules.

- Logins: `LoginThrottleMiddleware` counts every `POST /login` (the page's login form and
  gradio_client's `auth=`) per client address in a `LoginThrottle`; an address in back-off gets
  429 with Retry-After and its password is not even checked.
- `/health`: when the app has credentials (`--auth`, `--api-key`), `health_view` gives the full
  report only to a caller who shows them (HTTP Basic `user:pass`, `Authorization: Bearer <api
  key>`, or the page's login cookie); everyone else gets `{"status": ...}`. Credentials sent to
  /health count as login attempts too.
- Owners: each browser gets a random owner id with the page (the HttpOnly, SameSite=Lax cookie
  OWNER_COOKIE); `owner_of(request)` is whose saved voices a request may touch: the `--auth` user,
  else that browser. `viewer_of(request)` is whose streams it may read: that browser.
- Page sessions: `PageAccessMiddleware` lets only the page call the page's internal Gradio
  endpoints (every event that is not part of the documented API, and the component server
  functions such as the stream poll): the call must carry the browser's owner cookie, and its
  Gradio session (session_hash) belongs to the browser that used it first; no other browser may
  call, poll, cancel or listen to events with it. The documented API (`/synthesize`,
  `/synthesize_captioned`, `/synthesize_takes`) stays open to any client (behind `--auth` when set).

The client address is the connection's peer as uvicorn reports it (behind a reverse proxy on the
same machine uvicorn takes it from X-Forwarded-For).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Callable
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from gradio.data_classes import PredictBody
from gradio.routes import App as GradioApp
from pydantic import ValidationError

from .throttle import LoginThrottle

LOGIN_PATHS = ("/login", "/login/")  # Gradio's login route, the page mounted at "/"
PAGE_PATHS = ("/", "")  # the page's HTML
API_PREFIX = "/gradio_api/"
OWNER_COOKIE = "cosyfast-owner"
OWNER_ID = re.compile(r"[0-9a-f]{32}")
OWNER_COOKIE_DAYS = 400  # browsers keep a cookie at most this long; each page load renews it
MAX_BODY_BYTES = 1 << 20  # an event call is JSON: texts, settings, references to uploaded files
BODY_BYTES_PER_CHAR = 8  # a JSON body may hold escaped characters (\uXXXX: 6 bytes) and other fields
BODY_SLACK_BYTES = 64 * 1024
MAX_SESSIONS = 100_000  # page sessions remembered (the least recently used are forgotten)


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


# ---------------------------------------------------------------------------- owners


def browser_id(request) -> str | None:
    """The browser's owner id from its cookie (a Starlette or Gradio request), or None."""
    cookies = getattr(request, "cookies", None) or {}
    value = cookies.get(OWNER_COOKIE) if hasattr(cookies, "get") else None
    return value if isinstance(value, str) and OWNER_ID.fullmatch(value) else None


def owner_of(request) -> str | None:
    """Whose saved voices this request may see and change: "user:<name>" with --auth, else
    "browser:<owner id>"; None for a caller with neither."""
    user = getattr(request, "username", None)
    if isinstance(user, str) and user:
        return f"user:{user}"
    browser = browser_id(request)
    return f"browser:{browser}" if browser else None


OPEN_API_OWNER = "api"  # every caller of an API open without keys (loopback only)


def api_owner_of_key(key: str) -> str:
    """Whose saved voices an API call with this (accepted) key may touch: "api:" and a hash."""
    return "api:" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def viewer_of(request) -> str | None:
    """Whose streams this request may read: the browser's owner id (None without one)."""
    return browser_id(request)


def _cookie_of(scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            jar = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a malformed Cookie header carries no owner
                return None
            morsel = jar.get(OWNER_COOKIE)
            if morsel is not None and OWNER_ID.fullmatch(morsel.value):
                return morsel.value
    return None


# ---------------------------------------------------------------------------- page sessions


class SessionOwners:
    """Gradio session hash -> the browser (owner id) that used it first; bounded (LRU)."""

    def __init__(self, limit: int = MAX_SESSIONS):
        self.limit = limit
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def owner(self, session: str) -> str | None:
        with self._lock:
            owner = self._owners.get(session)
            if owner is not None:
                self._owners.move_to_end(session)
            return owner

    def claim(self, session: str, browser: str) -> bool:
        """True when `session` is `browser`'s (claimed now if nobody had it)."""
        with self._lock:
            owner = self._owners.setdefault(session, browser)
            self._owners.move_to_end(session)
            while len(self._owners) > self.limit:
                self._owners.popitem(last=False)
            return owner == browser


def public_events(blocks) -> tuple[frozenset[int], frozenset[str]]:
    """(fn ids, api names) of the Blocks' events that are the documented API: every other event
    is internal (the page's own)."""
    public = [fn for fn in blocks.fns.values() if fn.api_visibility == "public"]
    return frozenset(fn._id for fn in public), frozenset(fn.api_name for fn in public if fn.api_name)


def text_body_bytes(max_text_chars: int) -> int:
    """The largest JSON body a request with a text of up to `max_text_chars` may need: the bound
    of a page event (at least MAX_BODY_BYTES) and of the API's speech request."""
    return max_text_chars * BODY_BYTES_PER_CHAR + BODY_SLACK_BYTES


class PageAccessMiddleware:
    """ASGI middleware: the owner cookie with the page, and page sessions for Gradio's event
    routes (see the module docstring). `public` is what `public_events` returns."""

    EVENT_ROUTES = ("queue/join", "run/", "api/", "call/", "component_server", "cancel")
    SESSION_ROUTES = ("queue/data", "heartbeat/")  # GET: session hash in the query or the path

    def __init__(self, app, public: tuple[frozenset[int], frozenset[str]], sessions: SessionOwners | None = None,
                 max_body_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_body_bytes = app, max_body_bytes  # an event's body: text_body_bytes of a long limit
        self.public_ids, self.public_names = public
        self.sessions = sessions or SessionOwners()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        browser = _cookie_of(scope)
        if method == "GET" and path in PAGE_PATHS:
            return await self.app(scope, receive, self._with_owner_cookie(scope, send, browser))
        route = path[len(API_PREFIX):] if path.startswith(API_PREFIX) else None
        if route is None:
            return await self.app(scope, receive, send)
        if method == "POST" and route.startswith(self.EVENT_ROUTES):
            body = await _read_body(receive, self.max_body_bytes)
            if body is None:
                return await _refuse(scope, receive, send, 413, "The request is too large.")
            problem = self._event_problem(route, body, browser)
            if problem:
                return await _refuse(scope, receive, send, 403, problem)
            return await self.app(scope, _replay(body, receive), send)
        if method == "GET" and route.startswith(self.SESSION_ROUTES):
            session = (route.split("/", 1)[1] if route.startswith("heartbeat/")
                       else _query_value(scope, "session_hash"))
            if session and self.sessions.owner(session) not in (None, browser):
                return await _refuse(scope, receive, send, 403, "This session belongs to another browser.")
        return await self.app(scope, receive, send)

    def _event_problem(self, route: str, body: bytes, browser: str | None) -> str:
        """Why this event call is refused ('' when it may go on)."""
        try:
            call = json.loads(body) if body else {}
        except ValueError:
            call = {}
        call = call if isinstance(call, dict) else {}
        session = call.get("session_hash")
        session = session if isinstance(session, str) and session else None
        if self._is_internal(route, call):
            if browser is None or session is None:
                return "This endpoint belongs to the page; use the documented API (/synthesize) instead."
            if not self.sessions.claim(session, browser):
                return "This session belongs to another browser."
        elif session is not None and self.sessions.owner(session) not in (None, browser):
            return "This session belongs to another browser."
        return ""

    def _is_internal(self, route: str, call: dict) -> bool:
        """Whether the call may run something that is not part of the documented API, decided
        as Gradio picks the function: a component server function; for queue/join, run/ and api/
        the fn_index as Gradio's own PredictBody reads it ("3" and 3.0 are 3), else the api name;
        for call/ (which ignores any fn_index) the api name. A body Gradio would not accept counts
        as internal."""
        if route.startswith("component_server"):
            return True
        if route.startswith("cancel"):
            return False  # cancelling is bound to the session only
        parts = route.rstrip("/").split("/")
        if parts[0] == "call":
            name = parts[2] if parts[1:2] == ["v2"] and len(parts) > 2 else parts[1] if len(parts) > 1 else ""
            return name not in self.public_names
        try:
            fn_index = PredictBody.model_validate(call).fn_index
        except ValidationError:
            return True
        if fn_index is not None:
            return fn_index not in self.public_ids
        return parts[0] == "queue" or len(parts) < 2 or parts[1] not in self.public_names

    def _with_owner_cookie(self, scope, send, browser: str | None):
        """`send` that adds the owner cookie (the same id renewed, or a new one) to the page."""
        owner = browser or secrets.token_hex(16)
        cookie = (f"{OWNER_COOKIE}={owner}; Path=/; Max-Age={OWNER_COOKIE_DAYS * 86400}; HttpOnly; "
                  f"SameSite=Lax{'; Secure' if scope.get('scheme') == 'https' else ''}")

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie.encode())]}
            await send(message)

        return send_with_cookie


async def _read_body(receive, limit: int = MAX_BODY_BYTES) -> bytes | None:
    """The whole request body, or None when it is larger than `limit`."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _query_value(scope, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None


async def _refuse(scope, receive, send, status: int, detail: str) -> None:
    await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
