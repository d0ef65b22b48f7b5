"""The subject's value at rest: sealed (Fernet: AES-128-CBC with HMAC-SHA256, from
``cryptography``) under the job-store encryption key, and recognised by keyed hashes
(HMAC-SHA256 under the subject-hash pepper), never by an unkeyed digest: a small
integer id would be found again from its plain SHA-256 in a moment.

Retired keys still open what they sealed (``MultiFernet``: the current key seals,
every listed key opens), so a key is rotated without downtime: deploy the new key
with the old one listed as retired, then seal the stored values again
(``reseal_values``) and drop the old key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from models.keyring import keyring
from models.settings import Settings, retired_keys

if TYPE_CHECKING:
    from models.messages import ErasureRequest


class UnreadableSubject(Exception):
    """A stored value none of the configured keys opens (a key was dropped too soon)."""

    def __init__(self) -> None:
        super().__init__(
            "the subject's value cannot be decrypted with the configured job-store keys "
            "(ERASER_JOB_STORE_ENCRYPTION_KEY, ERASER_JOB_STORE_RETIRED_ENCRYPTION_KEYS)"
        )


def subject_hash(pepper: bytes, kind: str, value: str) -> str:
    """The subject's keyed hash: HMAC-SHA256 of ``kind:value`` under the pepper."""
    mac = hmac.new(pepper, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{mac}"


def request_digest(request: ErasureRequest) -> str:
    """The canonical digest of what a request asks (not who asked). Never stored: only
    its HMAC is (``SubjectSeal.request_hash``)."""
    doc = {
        "kind": request.subject_kind,
        "value": request.subject_value,
        # Duplicates collapsed: submit() makes one task of a service named twice.
        "services": sorted(set(request.services)),
        "dry_run": request.dry_run,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def keyed(pepper: bytes, digest: str) -> str:
    """HMAC-SHA256 of a request digest under the pepper (64 hex characters). Jobs made
    before keyed hashes held the digest itself; the migration keyed them the same way,
    so an idempotency key from before the upgrade still matches its request."""
    return hmac.new(pepper, b"request:" + digest.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class SubjectSeal:
    """Seals and opens the subject's value, and hashes it under the pepper."""

    keys: tuple[bytes, ...]
    pepper: bytes

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("at least one encryption key is needed")

    @property
    def _fernet(self) -> MultiFernet:
        return MultiFernet([Fernet(k) for k in self.keys])

    def seal(self, value: str) -> str:
        """The value as a Fernet token under the current key."""
        return self._fernet.encrypt(value.encode()).decode()

    def open(self, token: str) -> str:
        """The value a token holds (any configured key); ``UnreadableSubject`` else."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise UnreadableSubject() from None

    def reseal(self, token: str) -> str:
        """The same value sealed under the current key (for key rotation)."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise UnreadableSubject() from None

    def sealed_under_current(self, token: str) -> bool:
        """Whether the current key opens ``token`` (no rotation needed)."""
        try:
            Fernet(self.keys[0]).decrypt(token.encode())
        except InvalidToken:
            return False
        return True

    def subject_hash(self, kind: str, value: str) -> str:
        return subject_hash(self.pepper, kind, value)

    def request_hash(self, request: ErasureRequest) -> str:
        """The keyed hash that detects a reused idempotency key with another body."""
        return keyed(self.pepper, request_digest(request))


def subject_seal(settings: Settings) -> SubjectSeal:
    """The seal of this deployment: the current key (derived when embedded, as the
    keyring derives its secrets), then the retired ones."""
    ring = keyring(settings)
    retired = retired_keys(settings.job_store_retired_encryption_keys)
    return SubjectSeal(
        keys=(ring.job_store_key, *(k.encode() for k in retired)), pepper=ring.pepper
    )
