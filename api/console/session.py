"""The console's sign-in: an API key exchanged for a signed session cookie.

The cookie holds the key's id and a random CSRF token, signed (itsdangerous, with a
timestamp) under a key derived from ``ERASER_CERTIFICATE_KEY``: never the key's
secret. Without a certificate key, each API process draws a random signing key at
start, so sessions end when it restarts (and do not carry across processes). Each
request looks the key id up in the API's keys again (``api.keys.ApiKeys``): a removed,
revoked or expired key signs out every session of it, and changed scopes apply at once.

The cookie is ``HttpOnly``, ``SameSite=Strict``, ``Secure`` on HTTPS, and expires
after ``SESSION_SECONDS``. Forms that change anything carry the session's CSRF token
(403 without it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.responses import Response

from api.keys import ApiKeys, KeysUnavailable, Scope
from models.settings import ApiKeyEntry

COOKIE = "eraser_console"
#: A session lasts this long after sign-in.
SESSION_SECONDS = 8 * 3600
_SALT = "eraser.console.session"


class SignInRequired(Exception):
    """No valid session: the page sends the browser to the sign-in form."""


class Forbidden(Exception):
    """The session's key lacks a scope, or a form lacks its CSRF token."""


@dataclass(frozen=True)
class Operator:
    """The signed-in operator: their API key (as ``ERASER_API_KEYS`` has it now) and
    the session's CSRF token."""

    key: ApiKeyEntry
    csrf: str

    def may(self, scope: Scope) -> bool:
        return scope.value in self.key.scopes

    @property
    def actor(self) -> str:
        """The audit events' actor, as the API writes it."""
        return f"key:{self.key.id}"


def _signing_key(request: Request) -> bytes:
    """The session cookie's key, derived from the subject-hash pepper (a server-side
    secret every deployment has; embedded mode derives one), so every API replica
    accepts the others' sessions and a restart keeps them."""
    state = request.app.state
    derived: bytes | None = getattr(state, "console_signing_key", None)
    if derived is None:
        from models.keyring import keyring  # noqa: PLC0415 - loads the JOSE library

        root = keyring(state.settings).pepper
        derived = hmac.new(root, b"eraser console session v1", hashlib.sha256).digest()
        state.console_signing_key = derived
    return derived


def _serializer(request: Request) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_signing_key(request), salt=_SALT)


def sign_in(request: Request, response: Response, secret: str) -> bool:
    """Set the session cookie when ``secret`` is a valid API key; False otherwise."""
    keys: ApiKeys = request.app.state.api_keys
    try:
        key = keys.authenticate(secret.strip())
    except KeysUnavailable:
        return False
    if key is None or key.expired():
        return False
    token = _serializer(request).dumps({"k": key.id, "c": secrets.token_urlsafe(24)})
    response.set_cookie(
        COOKIE,
        token,
        max_age=SESSION_SECONDS,
        path="/console",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return True


def sign_out(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict")


def current(request: Request) -> Operator | None:
    """The operator of a valid, unexpired session whose key still exists; or None."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    try:
        data: Any = _serializer(request).loads(token, max_age=SESSION_SECONDS)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("c"), str):
        return None
    keys: ApiKeys = request.app.state.api_keys
    key = keys.active(data.get("k"))
    return Operator(key, data["c"]) if key is not None else None


def signed_in(request: Request) -> Operator:
    """A dependency: the operator, or a redirect to the sign-in form."""
    operator = current(request)
    if operator is None:
        raise SignInRequired
    return operator


def require(operator: Operator, scope: Scope) -> None:
    if not operator.may(scope):
        raise Forbidden(f"Your API key lacks the scope {scope.value}.")


def check_csrf(operator: Operator, form: dict[str, str]) -> None:
    if not hmac.compare_digest(form.get("csrf", ""), operator.csrf):
        raise Forbidden("The form's security token is missing or stale. Reload the page.")


SignedIn = Annotated[Operator, Depends(signed_in)]
