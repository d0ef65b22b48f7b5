"""``eraser flower-proxy``: Flower behind authentication, read-only.

Flower shows every task's arguments to whoever can open it, and its API sends, revokes
and aborts tasks and shuts workers down. So Flower runs without authentication on
loopback (in Kubernetes: in this proxy's pod), and this proxy is the only way in:

- HTTP Basic authentication against ``ERASER_FLOWER_USERS``, entries
  ``NAME:sha256:HEX`` separated by commas, HEX being the SHA-256 of the password (so the
  environment holds no password). Use generated passwords: the hash is not salted.
- Only Flower's read routes (``READ_ROUTES``) and only GET and HEAD reach Flower. The
  tasks table searches with a POST: it is sent to Flower as the same search by GET.
  Any other method is refused with 405, any other path with 403, so a route that a
  later Flower adds stays closed until it is listed here.
- ``/healthcheck`` answers without credentials, for orchestrators' probes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, unquote, urlencode

import httpx
from pydantic import AnyHttpUrl, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from worker.exceptions import EraserError

log = logging.getLogger("eraser.flowerproxy")

#: Flower 2.2's routes that only read (``flower/urls.py``), matched against the raw
#: path as Tornado matches them. Not listed, so refused: task apply, async-apply,
#: send-task, abort, revoke, timeout and rate-limit; worker shutdown, pool restart,
#: grow, shrink and autoscale, queue add- and cancel-consumer; login and logout.
READ_ROUTES: tuple[re.Pattern[str], ...] = tuple(
    re.compile(pattern)
    for pattern in (
        r"/",
        r"/workers",
        r"/worker/[^/]+",
        r"/tasks",
        r"/tasks/datatable",
        r"/task/[^/]+",
        r"/broker",
        r"/api/workers",
        r"/api/tasks",
        r"/api/task/types",
        r"/api/queues/length",
        r"/api/task/info/[^/]+",
        r"/api/task/result/[^/]+",
        r"/metrics",
        r"/healthcheck",
        r"/static/.+",
    )
)
#: The tasks table's search: a POST that reads, sent on to Flower as a GET.
SEARCH_PATH = b"/tasks/datatable"
SEARCH_MAX_BYTES = 65536
HEALTH_PATH = b"/healthcheck"

_USER = re.compile(r"(?P<name>[^:,\s]+):sha256:(?P<digest>[0-9a-fA-F]{64})")
#: What an unknown name is compared with, so that the time taken does not tell
#: which names exist.
_DECOY = bytes(32)
#: Request headers Flower may see: no credentials, no cookies.
_REQUEST_HEADERS = ("accept", "accept-language", "if-none-match", "if-modified-since")
#: Response headers passed back. Flower's CORS headers (``Access-Control-Allow-Origin:
#: *`` when its API runs unauthenticated) and its cookies stay behind.
_RESPONSE_HEADERS = frozenset(
    {"content-type", "cache-control", "etag", "last-modified", "expires", "x-content-type-options"}
)
_PROBLEM_BASE = "urn:eraser:problem:"
_REALM = 'Basic realm="Eraser Flower", charset="UTF-8"'


class NoFlowerUsers(EraserError):
    """ERASER_FLOWER_USERS names nobody: the proxy would let nobody in."""

    def __init__(self) -> None:
        super().__init__(
            "ERASER_FLOWER_USERS is not set: give NAME:sha256:HEX entries, HEX being "
            "the output of: printf %s PASSWORD | sha256sum"
        )


class BadFlowerUser(EraserError):
    """An ERASER_FLOWER_USERS entry is not ``NAME:sha256:HEX``."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"ERASER_FLOWER_USERS: the entry of {name!r} is not NAME:sha256:HEX "
            "(HEX: 64 hex digits, the SHA-256 of the password)"
        )
        self.name = name


class ProxySettings(BaseSettings):
    """The proxy's settings, from ``ERASER_FLOWER_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="ERASER_FLOWER_", env_file=".env", extra="ignore")

    #: Who may read Flower: ``NAME:sha256:HEX,...`` (see the module's docstring).
    users: str = ""
    #: Flower, listening where only this proxy reaches it.
    upstream: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:5556")
    #: How long to wait for Flower's answer.
    timeout_seconds: float = Field(default=30.0, gt=0)


def parse_users(text: str) -> dict[str, bytes]:
    """``NAME:sha256:HEX,...`` -> {name: digest}; raises if an entry is malformed or
    there is none."""
    users: dict[str, bytes] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        match = _USER.fullmatch(entry)
        if match is None:
            # Only the name: a password pasted by mistake must not reach a log.
            raise BadFlowerUser(entry.partition(":")[0])
        users[match["name"]] = bytes.fromhex(match["digest"])
    if not users:
        raise NoFlowerUsers()
    return users


def authenticated(header: str | None, users: Mapping[str, bytes]) -> str | None:
    """The user an ``Authorization: Basic`` header proves to be, or None."""
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, colon, password = decoded.partition(":")
    digest = hashlib.sha256(password.encode("utf-8")).digest()
    matches = hmac.compare_digest(digest, users.get(name, _DECOY))
    return name if matches and colon and name in users else None


def is_read_route(raw_path: bytes) -> bool:
    """Whether Flower answers ``raw_path`` (percent-encoded, no query) by reading."""
    try:
        path = raw_path.decode("ascii")
    except UnicodeDecodeError:
        return False
    # httpx would resolve dot segments: /api/task/info/../../worker/shutdown/w is not
    # the route it seems to be.
    if any(segment in {".", ".."} for segment in unquote(path).split("/")):
        return False
    return any(route.fullmatch(path) for route in READ_ROUTES)


def _problem(status: int, kind: str, title: str, headers: dict[str, str] | None = None) -> Response:
    body = {"type": _PROBLEM_BASE + kind, "title": title, "status": status}
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


class FlowerProxy:
    """The proxy, an ASGI application: every request, whatever its path and method,
    comes to ``handle`` (no router that could answer first)."""

    def __init__(self, settings: ProxySettings) -> None:
        self.users = parse_users(settings.users)
        self.upstream = httpx.URL(str(settings.upstream))
        # trust_env=False: an HTTP(S)_PROXY variable must not send Flower's pages elsewhere.
        self.client = httpx.AsyncClient(
            timeout=settings.timeout_seconds, follow_redirects=False, trust_env=False
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await self.client.aclose()
            await send({"type": "lifespan.shutdown.complete"})
        elif scope["type"] == "http":
            response = await self.handle(Request(scope, receive))
            await response(scope, receive, send)
        else:  # Flower 2.2 polls; it has no websockets
            await send({"type": "websocket.close", "code": 1003})

    async def handle(self, request: Request) -> Response:
        raw = request.scope.get("raw_path") or quote(request.scope["path"]).encode("ascii")
        raw_path = bytes(raw).partition(b"?")[0]
        method = request.method
        if raw_path == HEALTH_PATH and method in {"GET", "HEAD"}:
            return await self._forward(request, raw_path, request.scope["query_string"])
        user = authenticated(request.headers.get("authorization"), self.users)
        if user is None:
            return _problem(
                401, "unauthenticated", "Credentials needed", {"WWW-Authenticate": _REALM}
            )
        if method in {"GET", "HEAD"}:
            query = request.scope["query_string"]
        elif method == "POST" and raw_path == SEARCH_PATH:
            search = await _search_query(request)
            if isinstance(search, Response):
                return search
            query = search
        else:
            log.warning(
                "refused %s %s from %s: Flower is read-only here", method, request.url.path, user
            )
            return _problem(405, "read-only", "Flower is read-only here", {"Allow": "GET, HEAD"})
        if not is_read_route(raw_path):
            log.warning("refused %s %s from %s: not a read route", method, request.url.path, user)
            return _problem(403, "not-a-read-route", "Not one of Flower's read routes")
        return await self._forward(request, raw_path, query)

    async def _forward(self, request: Request, raw_path: bytes, query: bytes) -> Response:
        target = raw_path + (b"?" + query if query else b"")
        url = self.upstream.copy_with(raw_path=target)
        if url.raw_path != target:  # forward exactly the path that was checked
            return _problem(403, "not-a-read-route", "Not one of Flower's read routes")
        headers = {k: v for k in _REQUEST_HEADERS if (v := request.headers.get(k)) is not None}
        try:
            # Always GET: Flower answers HEAD with 405; the body is dropped below.
            answer = await self.client.get(url, headers=headers)
        except httpx.TimeoutException:
            return _problem(504, "flower-timeout", "Flower did not answer in time")
        except httpx.HTTPError:
            return _problem(502, "flower-unreachable", "Flower is not reachable")
        passed = {k: v for k, v in answer.headers.items() if k.lower() in _RESPONSE_HEADERS}
        if request.method == "HEAD":
            passed["content-length"] = str(len(answer.content))
            return Response(b"", status_code=answer.status_code, headers=passed)
        return Response(answer.content, status_code=answer.status_code, headers=passed)


async def _search_query(request: Request) -> bytes | Response:
    """The tasks table's form-encoded POST body, as a query string."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return _problem(415, "unsupported-media-type", "The search is a form-encoded body")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > SEARCH_MAX_BYTES:
            return _problem(413, "too-large", "The search is too large")
    try:
        fields = parse_qsl(body.decode("ascii"), keep_blank_values=True, max_num_fields=1000)
    except (UnicodeDecodeError, ValueError):
        return _problem(400, "invalid-request", "The search is not a form-encoded body")
    return urlencode(fields).encode("ascii")


def create_app(settings: ProxySettings | None = None) -> ASGIApp:
    """The proxy as an ASGI application; raises if ``ERASER_FLOWER_USERS`` is unusable."""
    return FlowerProxy(settings or ProxySettings())


def serve(host: str, port: int) -> None:
    """Serve the proxy with uvicorn until interrupted."""
    import uvicorn  # noqa: PLC0415 - only serving needs the server

    uvicorn.run(create_app(), host=host, port=port, log_level="warning", access_log=False)
