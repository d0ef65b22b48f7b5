"""API keys: created once (the secret is shown once), stored by the service as a hash.

A secret reads ``ek_<id>_<random>``: the id finds the entry, then the SHA-256 of the
whole secret is compared with the stored hash in constant time. The secrets carry 256
random bits, so a fast hash is enough (nothing to brute-force).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

from models.settings import ApiKeyEntry


class Scope(StrEnum):
    #: Submit erasure jobs (dry runs, and real ones for kinds that are not admin-only).
    SUBMIT = "jobs:submit"
    #: Read jobs, services and certificates.
    READ = "jobs:read"
    #: Retry, cancel, replay, dead letters, and real jobs of admin-only kinds.
    ADMIN = "jobs:admin"


PREFIX = "ek_"


def hash_secret(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class NewKey:
    id: str
    secret: str
    entry: ApiKeyEntry


def create_key(name: str, scopes: list[Scope]) -> NewKey:
    """A new key: the secret (show it once) and the entry for ``ERASER_API_KEYS``."""
    key_id = secrets.token_hex(6)
    secret = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    entry = ApiKeyEntry(
        id=key_id, name=name, hash=hash_secret(secret), scopes=sorted({s.value for s in scopes})
    )
    return NewKey(key_id, secret, entry)


def authenticate(secret: str, entries: list[ApiKeyEntry]) -> ApiKeyEntry | None:
    """The entry whose hash matches ``secret``, or None. Every entry with the secret's
    id is compared in constant time; an unknown id costs the same hash."""
    key_id = ""
    if secret.startswith(PREFIX) and "_" in secret[len(PREFIX) :]:
        key_id = secret[len(PREFIX) :].split("_", 1)[0]
    presented = hash_secret(secret)
    found = None
    for entry in entries:
        if entry.id == key_id and hmac.compare_digest(entry.hash, presented):
            found = entry
    return found
