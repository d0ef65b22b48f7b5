"""Typed query parameters: what the OpenAPI document promises is what is accepted.

- ``Moment``: an ISO 8601 / RFC 3339 date-time (a bare number such as ``0.5`` is
  refused, not read as a Unix time), taken in UTC (naive means UTC). PostgreSQL
  refuses offsets beyond 15:59 that Python accepts; in UTC there are none.
- ``Cursor``: the opaque ``next_cursor`` of a page of jobs. One that does not decode is
  refused as a validation error (422), like any other parameter the schema allows by
  shape but the API cannot read.
- ``declared_only``: a query parameter the operation does not declare is a 422, so a
  typo (``?statu=failed``) is not silently a list of every job.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn

from fastapi import Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BeforeValidator

from models.store.queries import JobPosition

#: A date, a time, optional fractions and an optional offset (RFC 3339, or without one).
_ISO_8601 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:?\d{2})?"
)
#: The alphabet of unpadded URL-safe base64.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"
CURSOR_MAX = 200
_JOB_ID_MAX = 64


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC (naive means UTC)."""
    try:
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except OverflowError:
        # Year 1 or 9999 pushed past the calendar by its offset.
        raise ValueError("the date-time is out of range in UTC") from None


def _iso_8601(value: Any) -> Any:
    if isinstance(value, str) and not _ISO_8601.fullmatch(value):
        raise ValueError("expected an ISO 8601 date-time, e.g. 2024-05-01T12:00:00Z")
    return value


Moment = Annotated[datetime, BeforeValidator(_iso_8601), AfterValidator(as_utc)]


def encode_cursor(position: JobPosition) -> str:
    raw = json.dumps([position.created_at.isoformat(), position.job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> JobPosition:
    """The position a cursor names; ValueError when it names none."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, job_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(job_id, str) or "\x00" in job_id or len(job_id) > _JOB_ID_MAX:
            raise ValueError("bad job id")
        return JobPosition(as_utc(datetime.fromisoformat(at)), job_id)
    except (ValueError, TypeError, binascii.Error):
        raise ValueError("the cursor is not one this API handed out") from None


def _valid_cursor(cursor: str | None) -> str | None:
    if cursor is not None:
        decode_cursor(cursor)
    return cursor


Cursor = Annotated[
    str | None,
    Query(
        pattern=CURSOR_PATTERN,
        max_length=CURSOR_MAX,
        description="The ``next_cursor`` of the previous page. One this API did not hand "
        "out is refused with 422.",
    ),
    AfterValidator(_valid_cursor),
]


def declared_only(request: Request) -> None:
    """A dependency: refuse query parameters the matched operation does not declare,
    and any given more than once (every one the API declares takes one value; FastAPI
    would silently keep the last). The unknown names are not echoed (they are the
    caller's input); the known are."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None:
        return
    known = sorted(_query_names(dependant))
    given = [name for name, _ in request.query_params.multi_items()]
    if any(name not in known for name in given):
        takes = ", ".join(known) if known else "none"
        _refuse(f"unknown query parameter (this operation takes: {takes})")
    repeated = sorted({name for name in given if given.count(name) > 1})
    if repeated:
        _refuse(f"a query parameter given more than once: {', '.join(repeated)}")


def _refuse(message: str) -> NoReturn:
    raise RequestValidationError([{"loc": ("query",), "msg": message}])


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters an operation declares, its dependencies' included."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names
