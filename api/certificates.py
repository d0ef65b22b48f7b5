"""Certificates and secrets at the edges: what the CLI and the HTTP API call.

Plain functions, no argument parsing and no routing, so any front end can call them:

- ``keygen()``: a new signing key pair (private JWK, public JWKS);
- ``public_key(settings)``: the JWKS that verifies this deployment's certificates;
- ``verify(token, jwks)``: a certificate's claims, or ``InvalidCertificate`` saying why;
- ``generate_secrets_env()``: ``export NAME=VALUE`` lines for every server secret;
- ``certificate_of(store, settings, job_id)``: a finished job's certificate (a JWS);
- ``certificate_response(...)`` and ``jwks_response(...)``: the HTTP answers.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import httpx
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from models import certificate
from models.certificate import CertificateError, InvalidCertificate, Verified
from models.keyring import MissingSecrets, keyring, new_secrets, new_signing_key, public_part
from models.settings import Settings
from models.store.database import JobStore
from models.store.tables import Job

#: RFC 7515's media type of a compact JWS.
JOSE = "application/jose"
#: RFC 7517's media type of a JWK set.
JWK_SET = "application/jwk-set+json"
#: How long fetching a JWKS by URL may take.
FETCH_TIMEOUT_SECONDS = 10.0

__all__ = [
    "JOSE",
    "JWK_SET",
    "CertificateError",
    "CertificateRefused",
    "CertificateView",
    "InvalidCertificate",
    "JwksUnavailable",
    "Verified",
    "certificate_of",
    "certificate_response",
    "generate_secrets_env",
    "jwks_response",
    "keygen",
    "public_key",
    "read_token",
    "verify",
]


class JwksUnavailable(Exception):
    """The JWKS to verify with could not be read (file, URL, or not a JWKS)."""


class CertificateRefused(Exception):
    """A certificate cannot be served: ``status`` and ``kind`` for a problem document."""

    def __init__(self, status: int, kind: str, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail


class CertificateView(BaseModel):
    """The readable view of a certificate (``Accept: application/json``): the compact
    JWS itself, then its decoded header and claims (checked against this server's keys)."""

    certificate: str
    header: dict[str, Any]
    claims: dict[str, Any]


def keygen() -> tuple[dict[str, Any], dict[str, Any]]:
    """A new signing key: (private JWK for ``ERASER_CERTIFICATE_SIGNING_KEY``, its
    public JWKS to publish)."""
    private = new_signing_key()
    return private, {"keys": [public_part(private)]}


def public_key(settings: Settings) -> dict[str, Any]:
    """The JWKS that verifies this deployment's certificates: the current key, then
    the retired ones (``ERASER_CERTIFICATE_PUBLIC_KEYS``)."""
    return keyring(settings).public_jwks()


def verify(token: str, jwks: dict[str, Any] | str | Path) -> Verified:
    """The verified header and claims of a certificate (a compact JWS). ``jwks`` is a
    JWKS, or a file path or an ``http(s)://`` URL to read one from. Raises
    ``InvalidCertificate`` (malformed, unknown kid, bad signature) or
    ``JwksUnavailable``."""
    keys = jwks if isinstance(jwks, dict) else _load_jwks(str(jwks))
    if not isinstance(keys.get("keys"), list):
        raise JwksUnavailable('the JWKS is not a JSON object {"keys": [...]}')
    return certificate.verify(token, keys)


def read_token(text: str) -> str:
    """A certificate as saved: the compact JWS, or the JSON view holding it."""
    text = text.strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            raise InvalidCertificate("malformed: neither a compact JWS nor JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("certificate"), str):
            raise InvalidCertificate("malformed: a JSON document without a certificate field")
        return str(doc["certificate"])
    return text


def generate_secrets_env() -> str:
    """``export NAME=VALUE`` lines (shell-quoted) for every server-side secret, fresh:
    ``eval "$(eraser secrets generate --env)"`` sets them in a shell."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in new_secrets().items())


def certificate_of(store: JobStore, settings: Settings, job_id: str) -> str:
    """A finished job's certificate, signed now with the current key (the claims come
    from the job record, so signing again gives the same claims). Raises
    ``CertificateRefused`` (no such job, job not finished, no signing key)."""
    try:
        keys = keyring(settings)
    except MissingSecrets as exc:
        raise CertificateRefused(
            503, "no-certificate-key", "Certificates are off", str(exc)
        ) from None
    with store.transaction(durable=False) as session:
        job = session.get(Job, job_id)
        if job is None:
            raise CertificateRefused(404, "job-not-found", "No such job", f"no job {job_id}")
        try:
            return certificate.build(job, keys)
        except CertificateError as exc:
            raise CertificateRefused(
                409, "job-not-finished", "The job has not finished", str(exc)
            ) from None


def certificate_response(
    store: JobStore, settings: Settings, job_id: str, accept: str | None
) -> Response:
    """``GET /v1/jobs/{id}/certificate``: the compact JWS (``application/jose``), or
    the readable view when the client prefers ``application/json``."""
    token = certificate_of(store, settings, job_id)
    if not _prefers_json(accept):
        return Response(token, media_type=JOSE)
    seen = certificate.verify(token, public_key(settings))
    view = CertificateView(certificate=token, header=seen.header, claims=seen.claims)
    return JSONResponse(view.model_dump())


def jwks_response(settings: Settings) -> Response:
    """``GET /.well-known/jwks.json``: the public keys, no authentication."""
    try:
        keys = public_key(settings)
    except MissingSecrets as exc:
        raise CertificateRefused(
            503, "no-certificate-key", "Certificates are off", str(exc)
        ) from None
    return JSONResponse(keys, media_type=JWK_SET, headers={"Cache-Control": "max-age=300"})


#: OpenAPI ``responses`` of the two endpoints (the JWS is a string; the view a model).
CERTIFICATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The certificate: a compact JWS (EdDSA), or with "
        "`Accept: application/json` its readable view",
        "content": {
            JOSE: {"schema": {"type": "string", "pattern": r"^[\w-]+\.[\w-]+\.[\w-]+$"}},
            "application/json": {"schema": CertificateView.model_json_schema()},
        },
    }
}
JWKS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The public keys (JWKS) that verify certificates",
        "content": {
            JWK_SET: {
                "schema": {
                    "type": "object",
                    "required": ["keys"],
                    "properties": {"keys": {"type": "array", "items": {"type": "object"}}},
                }
            }
        },
    }
}


def _prefers_json(accept: str | None) -> bool:
    """True when ``Accept`` ranks ``application/json`` above ``application/jose``."""
    ranks = {JOSE: 0.0, "application/json": 0.0}
    for part in (accept or "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() not in ranks:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranks[media.lower()] = max(ranks[media.lower()], quality)
    return ranks["application/json"] > ranks[JOSE]


def _load_jwks(source: str) -> dict[str, Any]:
    if source.startswith(("http://", "https://")):
        try:
            answer = httpx.get(source, timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=True)
            answer.raise_for_status()
            text = answer.text
        except httpx.HTTPError as exc:
            raise JwksUnavailable(
                f"{source}: cannot fetch the JWKS ({type(exc).__name__})"
            ) from None
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise JwksUnavailable(f"{source}: cannot read the JWKS ({exc.strerror})") from None
    try:
        document = json.loads(text)
    except ValueError:
        raise JwksUnavailable(f"{source}: not JSON") from None
    if not isinstance(document, dict):
        raise JwksUnavailable(f'{source}: not a JWKS (a JSON object {{"keys": [...]}})')
    return document
