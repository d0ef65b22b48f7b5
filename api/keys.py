"""API keys: created once (the secret is shown once), stored by the service as a hash.

Keys come from ``ERASER_API_KEYS`` and, optionally, a keys file that a running API
re-reads when it changes (``ApiKeys``): removing a key there revokes it within
``RELOAD_CHECK_SECONDS``. A key may carry ``expires_at``.

A secret reads ``ek_<id>_<random>``: the id finds the entry, then the SHA-256 of the
whole secret is compared with the stored hash in constant time. The secrets carry 256
random bits, so a fast hash is enough (nothing to brute-force).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from models.settings import ApiKeyEntry

log = logging.getLogger("eraser.api")
_ENTRIES = TypeAdapter(list[ApiKeyEntry])


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


def create_key(name: str, scopes: list[Scope], expires_at: datetime | None = None) -> NewKey:
    """A new key: the secret (show it once) and the entry for ``ERASER_API_KEYS``."""
    key_id = secrets.token_hex(6)
    secret = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    entry = ApiKeyEntry(
        id=key_id,
        name=name,
        hash=hash_secret(secret),
        scopes=sorted({s.value for s in scopes}),
        expires_at=expires_at,
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


class KeysUnavailable(Exception):
    """The keys file cannot be read or holds no valid list of entries: every key is
    refused until it is fixed (the message names the file and the problem, no secret)."""


#: How often the keys file's identity (mtime, size, inode) is looked at: a revocation
#: takes effect within this many seconds.
RELOAD_CHECK_SECONDS = 1.0


def read_keys_file(path: Path) -> list[ApiKeyEntry]:
    """The entries of a keys file (a JSON list, as ``ERASER_API_KEYS``)."""
    try:
        return _ENTRIES.validate_json(path.read_bytes())
    except OSError as exc:
        raise KeysUnavailable(f"{path}: cannot read it ({exc.strerror})") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        place = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise KeysUnavailable(f"{path}: {place}: {first['msg']}") from None


def write_keys_file(path: Path, entries: list[ApiKeyEntry]) -> None:
    """Replace the keys file atomically (a running API never reads half a file)."""
    text = json.dumps([e.model_dump(mode="json", exclude_none=True) for e in entries], indent=2)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text + "\n")
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class ApiKeys:
    """The keys the API accepts: ``ERASER_API_KEYS`` (fixed for the process's life) and
    those of ``ERASER_API_KEYS_FILE``, re-read when the file changes (looked at most
    every ``check_seconds``). Thread-safe: handlers run in a thread pool."""

    def __init__(
        self,
        fixed: list[ApiKeyEntry],
        file: Path | None = None,
        check_seconds: float = RELOAD_CHECK_SECONDS,
    ) -> None:
        self._fixed = list(fixed)
        self._file = file
        self._check_seconds = check_seconds
        self._lock = threading.Lock()
        self._identity: tuple[int, int, int] | None = None
        self._checked = -math.inf
        self._loaded: list[ApiKeyEntry] | KeysUnavailable = []
        if file is not None:
            self._reload(file, time.monotonic())
            if isinstance(self._loaded, KeysUnavailable):
                raise self._loaded  # at start: refuse to serve rather than refuse every key

    def entries(self) -> list[ApiKeyEntry]:
        """Every configured key (expired ones included); ``KeysUnavailable`` when the
        keys file has become unreadable or invalid."""
        if self._file is not None:
            now = time.monotonic()
            if now - self._checked >= self._check_seconds:
                with self._lock:
                    if now - self._checked >= self._check_seconds:
                        self._reload(self._file, now)
            if isinstance(self._loaded, KeysUnavailable):
                raise self._loaded
            return [*self._fixed, *self._loaded]
        return self._fixed

    def authenticate(self, secret: str) -> ApiKeyEntry | None:
        """The entry ``secret`` belongs to (expired or not: the caller says which), or None."""
        return authenticate(secret, self.entries())

    def active(self, key_id: object) -> ApiKeyEntry | None:
        """The unexpired key ``key_id`` (a console session's), or None; None too while
        the keys file is unreadable."""
        try:
            entries = self.entries()
        except KeysUnavailable:
            return None
        return next((k for k in entries if k.id == key_id and not k.expired()), None)

    def _reload(self, file: Path, now: float) -> None:
        self._checked = now
        try:
            stat = file.stat()
        except OSError as exc:
            self._identity = None
            self._loaded = KeysUnavailable(f"{file}: cannot read it ({exc.strerror})")
            return
        identity = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if identity == self._identity:
            return
        self._identity = identity
        try:
            self._loaded = read_keys_file(file)
        except KeysUnavailable as exc:
            log.error("API keys: %s; every key is refused until it is fixed", exc)
            self._loaded = exc
