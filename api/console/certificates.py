"""A job's certificate as the job page checks it: verified against the public keys the
server publishes (``/.well-known/jwks.json``), the way a third party would, and its
claims compared with the job record.

Two checks: the certificate the console serves for the job now (signed with the
current key), and one the operator pastes (a copy downloaded earlier, perhaps signed
with a key since retired, or removed from the published keys, or altered).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from api.certificates import (
    CertificateRefused,
    InvalidCertificate,
    certificate_of,
    public_key,
    read_token,
    verify,
)
from models.keyring import MissingSecrets
from models.settings import Settings
from models.store.database import JobStore

#: Claims that may differ between two certificates of the same job: the Eraser that
#: signed it.
VOLATILE_CLAIMS = frozenset({"eraser_version"})


@dataclass(frozen=True)
class CertificateCheck:
    """The outcome: verified with key ``kid`` (the current one or a retired one still
    published), or why not."""

    verified: bool
    kid: str | None = None
    retired: bool = False
    reason: str = ""


def _check(
    token: str, settings: Settings, expected: dict[str, Any], *, compare: bool = True
) -> CertificateCheck:
    """``token`` verified with the published JWKS, for the job ``expected`` names, and
    (``compare``) its claims against ``expected``'s (the job record's now)."""
    try:
        jwks = public_key(settings)
    except MissingSecrets as exc:
        return CertificateCheck(False, reason=f"certificates are off: {exc}")
    try:
        seen = verify(token, jwks)
    except InvalidCertificate as exc:
        return CertificateCheck(False, reason=str(exc))
    kid = str(seen.header.get("kid", ""))
    keys = jwks.get("keys", [])
    retired = bool(keys) and keys[0].get("kid") != kid
    if seen.claims.get("job_id") != expected.get("job_id"):
        return CertificateCheck(
            False, kid, retired, f"it certifies another job ({seen.claims.get('job_id')})"
        )
    if not compare:
        return CertificateCheck(True, kid, retired)
    differ = sorted(
        name
        for name in (set(seen.claims) | set(expected)) - VOLATILE_CLAIMS
        if seen.claims.get(name) != expected.get(name)
    )
    if differ:
        return CertificateCheck(
            False, kid, retired, f"its claims differ from the job record: {', '.join(differ)}"
        )
    return CertificateCheck(True, kid, retired)


def check_served(store: JobStore, settings: Settings, job_id: str) -> CertificateCheck:
    """The certificate the console and the API serve for the job now (its claims are
    the job record's), checked against the published keys."""
    try:
        token = certificate_of(store, settings, job_id)
    except CertificateRefused as exc:
        return CertificateCheck(False, reason=f"{exc.title}: {exc.detail}")
    return _check(token, settings, {"job_id": job_id}, compare=False)


def check_pasted(store: JobStore, settings: Settings, job_id: str, text: str) -> CertificateCheck:
    """A certificate the operator holds for the job (compact JWS or the JSON view),
    checked against the published keys, and its claims against the job record's."""
    try:
        token = read_token(text)
        served = certificate_of(store, settings, job_id)
        # Signed just now from the job record with the current key: its claims are
        # the record's.
        expected = verify(served, public_key(settings)).claims
    except CertificateRefused as exc:
        return CertificateCheck(False, reason=f"{exc.title}: {exc.detail}")
    except InvalidCertificate as exc:
        return CertificateCheck(False, reason=str(exc))
    return _check(token, settings, expected)
