"""Erasure certificates: the signed evidence of one finished job, never its data.

A certificate is a compact JWS (RFC 7515) signed with Ed25519 (``alg: EdDSA``, the
signing key's ``kid`` in the header), so anyone holding the public JWKS can verify it
and nobody without the private key can make one. Its claims: the job id, the subject's
kind and a *keyed* hash of the subject (HMAC-SHA256 of ``kind:value`` under the
subject-hash pepper: whoever holds the value and the pepper can confirm it, nobody can
read the value back or test a guess without the pepper), per service and table the
counts and actions, the verification outcome, schema fingerprints, ``nothing_matched``,
timestamps and Eraser's version. A certificate signed with a derived development key
(embedded mode) says ``"dev": true`` and its ``kid`` starts with ``dev-``.

Signing and verifying go through ``joserfc``; nothing here implements crypto.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from joserfc import jws
from joserfc.errors import BadSignatureError, DecodeError, InvalidKeyIdError, JoseError
from joserfc.jwk import Key, KeySet, OKPKey

from models.keyring import ALGORITHM, DEV_KID_PREFIX, Keyring
from models.store import sealing
from models.store.tables import Job, Task, TaskStatus

FORMAT = "eraser.certificate/v2"
#: The JWS ``typ`` header (RFC 8725 explicit typing): not any other JWT of the issuer.
TYPE = "eraser-certificate+jwt"
ISSUER = "eraser"


#: The subject's keyed hash (defined once, beside the job store's sealing).
subject_hash = sealing.subject_hash


class CertificateError(Exception):
    """A certificate cannot be issued (job not finished)."""


class InvalidCertificate(Exception):
    """A certificate did not verify; the message says why in one line."""


@dataclass(frozen=True)
class Verified:
    """A certificate that verified: its header and claims."""

    header: dict[str, Any]
    claims: dict[str, Any]

    @property
    def dev(self) -> bool:
        return bool(self.claims.get("dev")) or str(self.header.get("kid", "")).startswith(
            DEV_KID_PREFIX
        )


def eraser_version() -> str:
    try:
        return version("eraser")
    except PackageNotFoundError:
        return "unknown"


def claims(job: Job, keys: Keyring) -> dict[str, Any]:
    """The certificate's claims for a finished job (raises ``CertificateError``)."""
    if job.finished_at is None:
        raise CertificateError(f"job {job.id} has not finished (status {job.status})")
    services = [_service(t) for t in job.tasks]
    started = [t.started_at for t in job.tasks if t.started_at is not None]
    body: dict[str, Any] = {
        "format": FORMAT,
        "iss": ISSUER,
        "iat": int(job.finished_at.timestamp()),
        "job_id": job.id,
        "subject_kind": job.subject_kind,
        # Computed at submission (the value is purged when the job ends).
        "subject_hash": job.subject_hash,
        "status": job.status,
        "dry_run": job.dry_run,
        "requested_by": job.requested_by,
        "requested_at": _time(job.created_at),
        "started_at": _time(min(started)) if started else None,
        "finished_at": _time(job.finished_at),
        "total_rows": job.total_rows,
        # False: some service's counts are a lower bound (its own entry says which).
        "counts_exact": all(s["counts_exact"] for s in services),
        "verification": {
            "services": len(services),
            "verified": sum(1 for s in services if s["verified"]),
            "nothing_matched": sum(1 for s in services if s["nothing_matched"]),
        },
        "services": services,
        "eraser_version": eraser_version(),
    }
    if keys.dev:
        body["dev"] = True
    return body


def _service(task: Task) -> dict[str, Any]:
    tables = [{"table": r["table"], "action": r["action"], "rows": r["rows"]} for r in task.rows]
    succeeded = task.status == TaskStatus.SUCCEEDED
    return {
        "service": task.service,
        "status": task.status,
        "rows": task.total_rows,
        "tables": tables,
        # Exact: every row each table lost is counted, crashes included. Otherwise
        # ``rows`` is a lower bound and ``rows_at_most`` the upper one (None: unknown).
        "counts_exact": task.counts_exact,
        **({} if task.counts_exact else {"rows_at_most": task.rows_at_most}),
        "verified": task.verified,
        # The final count found none of the subject's rows: 0 left. Unknown otherwise.
        "rows_left": 0 if task.verified else None,
        # Succeeded, and no table had a row of the subject to act on.
        "nothing_matched": succeeded
        and task.total_rows == 0
        and all(t["rows"] == 0 for t in tables),
        "schema_fingerprint": task.plan_fingerprint,
        "attempts": task.attempts,
        "started_at": _time(task.started_at),
        "finished_at": _time(task.finished_at),
    }


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def build(job: Job, keys: Keyring) -> str:
    """The certificate of a finished job: a compact JWS."""
    return sign(claims(job, keys), keys)


def sign(body: dict[str, Any], keys: Keyring) -> str:
    """``body`` as a compact JWS under the keyring's signing key."""
    header = {"alg": ALGORITHM, "kid": keys.kid, "typ": TYPE}
    payload = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    with _eddsa():
        return jws.serialize_compact(
            header, payload.encode(), keys.signing_key, algorithms=[ALGORITHM]
        )


def verify(token: str, jwks: dict[str, Any]) -> Verified:
    """The header and claims of ``token`` if a key of ``jwks`` signed it, else
    ``InvalidCertificate`` saying why: malformed, unknown kid, or bad signature."""
    token = token.strip()
    try:
        with _eddsa():
            header = jws.extract_compact(token.encode()).headers()
    except (JoseError, ValueError, TypeError, UnicodeError):
        raise InvalidCertificate("malformed: not a compact JWS") from None
    if header.get("alg") != ALGORITHM:
        raise InvalidCertificate(f"malformed: algorithm {header.get('alg')!r}, not {ALGORITHM}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidCertificate("malformed: the header names no kid")
    try:
        public: list[Key] = [
            OKPKey.import_key(k) for k in jwks.get("keys", []) if k.get("kid") == kid
        ]
    except (JoseError, ValueError, TypeError):
        raise InvalidCertificate(f"the JWKS key {kid!r} is not an Ed25519 public key") from None
    if not public:
        raise InvalidCertificate(f"unknown kid {kid!r}: no key of the JWKS has it")
    try:
        with _eddsa():
            found = jws.deserialize_compact(token, KeySet(public), algorithms=[ALGORITHM])
    except (BadSignatureError, InvalidKeyIdError):
        raise InvalidCertificate(
            f"bad signature: the certificate was altered or not signed by key {kid!r}"
        ) from None
    except (DecodeError, JoseError, ValueError):
        raise InvalidCertificate("malformed: not a compact JWS") from None
    try:
        body = json.loads(found.payload)
    except ValueError:
        raise InvalidCertificate("malformed: the payload is not JSON") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise InvalidCertificate(f"malformed: the payload is not an {FORMAT} certificate")
    return Verified(header=dict(found.headers()), claims=body)


@contextmanager
def _eddsa() -> Iterator[None]:
    """joserfc warns that RFC 9864 deprecates ``EdDSA`` for ``Ed25519``; the issue and
    today's stock JOSE libraries (PyJWT, jwcrypto) use ``EdDSA``, so it stays."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*EdDSA is deprecated.*")
        yield
