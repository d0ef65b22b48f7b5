"""The interface of a store that is not a SQL database, and the report every one gives.

A store erases one subject's keys (Redis) or objects (S3) found through the patterns or
prefixes its registry entry lists. It reports in the SQL engine's shape
(``ErasureReport``): a "table" is a pattern or prefix as written in the registry (with
``{value}``, never the value), ``rows`` are keys or objects, and ``verified`` says a
fresh look found nothing of the subject left.
"""

from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar

from models.erasure import ErasureReport, TableAction, TableOutcome
from models.registry import VALUE_PLACEHOLDER, value_delimiters
from worker.execution.options import Progress, ProgressCallback
from worker.stores.exceptions import SubjectValueRefused

#: Rounds of erase-then-look a store makes when writers re-create the subject's data.
MAX_PASSES = 3


@dataclass
class Tally:
    """What one pattern or prefix removed (or would remove)."""

    rows: int = 0
    bytes: int = 0


class Store(ABC):
    """One registered service that is not a SQL database.

    ``erasure_id`` names one erasure across its attempts (the caller's job and service ids,
    never the subject's value): an attempt that follows a failed one with the same erasure_id
    reports what both removed, counted once.
    """

    kind: ClassVar[str]

    def __init__(self, name: str, templates: list[str], settings: Mapping[str, object]) -> None:
        self.name = name
        self.templates = list(templates)
        text = json.dumps({"kind": self.kind, "templates": templates, **settings}, sort_keys=True)
        #: Says which patterns and settings a report was made with (the SQL engine's
        #: reports carry the schema's fingerprint in the same field).
        self.fingerprint = "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    @abstractmethod
    def preview(self, subject: str) -> ErasureReport:
        """Count what ``erase`` would remove, removing nothing (the dry run)."""

    @abstractmethod
    def erase(
        self,
        subject: str,
        progress: ProgressCallback | None = None,
        *,
        erasure_id: str | None = None,
    ) -> ErasureReport:
        """Remove the subject's keys or objects; ``progress`` hears of every batch."""

    @abstractmethod
    def verify(self, subject: str) -> int:
        """How many of the subject's keys or objects are there now (0 after an erasure)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def escape(self, subject: str) -> str:
        """The value as it goes into a template (as it is, unless the kind escapes it)."""
        return subject

    def render(self, subject: str) -> list[tuple[str, str]]:
        """(template, template with the value) for every pattern or prefix, after
        refusing a value that holds a character which ends ``{value}`` in a template:
        with ``tenant:{value}:*``, the value ``1:x`` would name keys of tenant ``1``."""
        if not subject:
            raise SubjectValueRefused(self.name, "is empty")
        for template in self.templates:
            for delimiter in value_delimiters(template):
                if delimiter in subject:
                    raise SubjectValueRefused(
                        self.name, f"holds {delimiter!r}, which ends the value in {template!r}"
                    )
        value = self.escape(subject)
        return [(t, t.replace(VALUE_PLACEHOLDER, value)) for t in self.templates]

    def report(
        self,
        *,
        dry_run: bool,
        tallies: Mapping[str, Tally],
        remaining: int,
        started: float,
        passes: int = 1,
        with_bytes: bool = False,
    ) -> ErasureReport:
        """The report: one outcome per template that matched something."""
        tables = [
            TableOutcome(
                table=template,
                action=TableAction.DELETE,
                rows=tally.rows,
                bytes=tally.bytes if with_bytes else None,
            )
            for template, tally in tallies.items()
            if tally.rows
        ]
        return ErasureReport(
            dry_run=dry_run,
            tables=tables,
            total_rows=sum(t.rows for t in tables),
            total_bytes=sum(t.bytes for t in tallies.values()) if with_bytes else None,
            verified=remaining == 0,
            passes=passes,
            schema_fingerprint=self.fingerprint,
            elapsed_seconds=time.monotonic() - started,
        )


def announce(
    progress: ProgressCallback | None,
    template: str,
    rows: int,
    totals: Mapping[str, int],
    started: float,
    *,
    counted: Mapping[str, int] | None = None,
) -> None:
    """Tell ``progress`` about one batch (``totals``: rows per template so far).

    A task keeps an execution's per-table progress (``rows_by_table``, from ``counted``:
    what this execution removed, per template) and adds the next execution's report to
    it, as for the SQL engine. A store whose report counts every attempt of the erasure
    (Redis's ledger) passes no ``counted``: counted twice, a retry after a failure
    would report too many."""
    if progress is None:
        return
    progress(
        Progress(
            table=template,
            action=TableAction.DELETE,
            rows=rows,
            total_rows=sum(totals.values()),
            elapsed_seconds=time.monotonic() - started,
            rows_by_table={f"{t}:{TableAction.DELETE}": n for t, n in (counted or {}).items()},
        )
    )
