"""S3 and S3-compatible stores: the subject's objects are those under the service's prefixes.

Objects are listed with ``ListObjectsV2`` and removed with ``DeleteObjects`` (at most
1,000 keys a call). In a versioned bucket, ``versions = "delete"`` lists with
``ListObjectVersions`` and removes every version and every delete marker under the
prefix (nothing of the subject stays recoverable); ``versions = "keep"`` removes only
the current objects (S3 puts a delete marker over each; older versions stay).

The prefix is used literally (S3 prefixes have no wildcards); a value that is empty,
holds ``/`` or ``..``, or holds the delimiter that follows ``{value}`` is refused: it
would name another prefix than the subject's.

Counts: an object (or version, or delete marker) counts when a listing of this
erasure saw it and a later listing no longer does. Each execution reports what it
removed and earlier executions did not count (their progress, which the task keeps,
counted theirs). The store remembers what it saw and counted per ``erasure_id``, so a
retry in the same worker counts each object once, including a batch whose
``DeleteObjects`` reply was lost.

Endpoint, region and credentials come from the standard AWS variables
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ...).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
import botocore.config
import botocore.exceptions

from models.erasure import ErasureReport
from models.registry import S3Service
from worker.execution.options import ProgressCallback
from worker.stores.base import MAX_PASSES, Store, Tally, announce
from worker.stores.exceptions import (
    InvalidStoreUrl,
    StoreRefused,
    StoreUnavailable,
    SubjectValueRefused,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: An object as listed: (key, version id or None for the current object).
Entry = tuple[str, str | None]
#: What one erasure saw: per template, each entry and its size.
Seen = dict[str, dict[Entry, int]]

#: ``DeleteObjects`` error codes worth retrying.
_TRANSIENT_CODES = {"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout"}
#: Erasures whose listings a store remembers for their retries.
_REMEMBERED = 256


class S3Store(Store):
    """The objects of one subject in one bucket."""

    kind = "s3"

    def __init__(self, name: str, service: S3Service, url: str, variable: str = "") -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise InvalidStoreUrl(variable or service.url_env, "s3://bucket[/base]")
        self.bucket = parts.netloc
        base = parts.path.strip("/")
        self.base = f"{base}/" if base else ""
        super().__init__(name, service.prefixes, {"versions": service.versions})
        self.service = service
        config = botocore.config.Config(
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=10,
            read_timeout=60,
        )
        self.client: S3Client = boto3.session.Session().client("s3", config=config)
        self._seen: OrderedDict[str, tuple[Seen, set[Entry]]] = OrderedDict()
        self._lock = threading.Lock()

    def render(self, subject: str) -> list[tuple[str, str]]:
        if "/" in subject or ".." in subject:
            raise SubjectValueRefused(
                self.name, "holds '/' or '..', which would name another prefix"
            )
        return [(t, self.base + p) for t, p in super().render(subject)]

    def close(self) -> None:
        self.client.close()

    # --- the interface ---------------------------------------------------------------------

    def preview(self, subject: str) -> ErasureReport:
        started = time.monotonic()
        prefixes = self.render(subject)
        with self._faults("ListObjects"):
            seen = self._census(prefixes, self._all_versions())
        tallies = _tallies(seen)
        total = sum(t.rows for t in tallies.values())
        return self.report(
            dry_run=True, tallies=tallies, remaining=total, started=started, with_bytes=True
        )

    def verify(self, subject: str) -> int:
        prefixes = self.render(subject)
        with self._faults("ListObjects"):
            seen = self._census(prefixes, self._all_versions())
        return sum(len(entries) for entries in seen.values())

    def erase(
        self,
        subject: str,
        progress: ProgressCallback | None = None,
        *,
        erasure_id: str | None = None,
    ) -> ErasureReport:
        started = time.monotonic()
        prefixes = self.render(subject)
        seen, counted = self._remembered(erasure_id)
        earlier = set(counted)  # counted by earlier executions: their task kept them
        mine: dict[str, int] = {}
        passes = 0
        with self._faults("DeleteObjects"):
            versions = self._all_versions()
            while True:
                passes += 1
                for template, prefix in prefixes:
                    for page in self._pages(prefix, versions):
                        fresh = _first_sight(seen, template, page)
                        self._delete(page)
                        new = [e for e in page if e in seen[template] and e not in counted]
                        counted.update(new)
                        mine[template] = mine.get(template, 0) + len(new)
                        totals = {t: len(entries) for t, entries in seen.items()}
                        announce(progress, template, fresh, totals, started, counted=mine)
                left = self._census(prefixes, versions)
                if not any(left.values()) or passes >= MAX_PASSES:
                    break
        gone = {
            template: {
                e: size
                for e, size in entries.items()
                if e not in left.get(template, {}) and e not in earlier
            }
            for template, entries in seen.items()
        }
        counted.update(e for entries in gone.values() for e in entries)
        remaining = sum(len(entries) for entries in left.values())
        return self.report(
            dry_run=False,
            tallies=_tallies(gone),
            remaining=remaining,
            started=started,
            passes=passes,
            with_bytes=True,
        )

    # --- listing and deleting --------------------------------------------------------------

    def _remembered(self, erasure_id: str | None) -> tuple[Seen, set[Entry]]:
        """What this process saw of the erasure, and what it already counted for it."""
        if erasure_id is None:
            return {}, set()
        with self._lock:
            seen, counted = self._seen.setdefault(erasure_id, ({}, set()))
            self._seen.move_to_end(erasure_id)
            while len(self._seen) > _REMEMBERED:
                self._seen.popitem(last=False)
        return seen, counted

    def _all_versions(self) -> bool:
        """Whether versions and delete markers are listed and removed one by one."""
        if self.service.versions == "keep":
            return False
        status = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
        return status in {"Enabled", "Suspended"}

    def _pages(self, prefix: str, versions: bool) -> Iterator[dict[Entry, int]]:
        """The objects under ``prefix`` a page at a time (a page at most ``batch_size``)."""
        size = self.service.batch_size
        if versions:
            for page in self.client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": size}
            ):
                entries: dict[Entry, int] = {}
                for v in page.get("Versions", []):
                    entries[(v["Key"], v["VersionId"])] = v.get("Size", 0)
                for m in page.get("DeleteMarkers", []):
                    entries[(m["Key"], m["VersionId"])] = 0
                yield from _chunks(entries, size)
        else:
            for listing in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": size}
            ):
                yield {(o["Key"], None): o.get("Size", 0) for o in listing.get("Contents", [])}

    def _census(self, prefixes: list[tuple[str, str]], versions: bool) -> Seen:
        """Everything under each prefix now; an object two prefixes name counts for the first."""
        seen: Seen = {}
        for template, prefix in prefixes:
            for page in self._pages(prefix, versions):
                _first_sight(seen, template, page)
        return seen

    def _delete(self, page: dict[Entry, int]) -> None:
        if not page:
            return
        objects: list[Any] = [
            {"Key": key, "VersionId": version} if version else {"Key": key} for key, version in page
        ]
        answer = self.client.delete_objects(
            Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
        )
        codes = sorted({e.get("Code", "Unknown") for e in answer.get("Errors", [])})
        if codes and set(codes) <= _TRANSIENT_CODES:
            raise StoreUnavailable(self.name, self.kind, ", ".join(codes))
        if codes:
            raise StoreRefused(self.name, self.kind, "DeleteObjects", ", ".join(codes))

    @contextmanager
    def _faults(self, operation: str) -> Iterator[None]:
        """botocore errors as ``StoreUnavailable`` (retry) or ``StoreRefused`` (do not);
        only the error code is kept: S3 messages may quote object keys."""
        try:
            yield
        except botocore.exceptions.ClientError as exc:
            error: Any = exc.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if code in _TRANSIENT_CODES or status >= 500:
                raise StoreUnavailable(self.name, self.kind, code) from None
            raise StoreRefused(self.name, self.kind, operation, code) from None
        except (
            botocore.exceptions.ConnectionError,
            botocore.exceptions.HTTPClientError,
        ) as exc:
            raise StoreUnavailable(self.name, self.kind, type(exc).__name__) from None
        except botocore.exceptions.BotoCoreError as exc:  # no credentials, bad parameters
            raise StoreRefused(self.name, self.kind, operation, type(exc).__name__) from None


def _first_sight(seen: Seen, template: str, page: dict[Entry, int]) -> int:
    """Add ``page`` to what ``template`` saw, skipping what another template saw first;
    the number newly seen."""
    mine = seen.setdefault(template, {})
    fresh = 0
    for entry, size in page.items():
        if any(entry in other for other in seen.values()):
            continue
        mine[entry] = size
        fresh += 1
    return fresh


def _chunks(entries: dict[Entry, int], size: int) -> Iterator[dict[Entry, int]]:
    items = list(entries.items())
    for start in range(0, len(items), size):
        yield dict(items[start : start + size])


def _tallies(seen: Seen) -> dict[str, Tally]:
    return {
        template: Tally(rows=len(entries), bytes=sum(entries.values()))
        for template, entries in seen.items()
    }
