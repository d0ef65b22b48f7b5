"""The one-database commands' work: reflect, plan, count, confirm, erase, report.

Every import of the engine (``worker.catalog``, ``worker.planning``,
``worker.execution``) the command line makes is in this module; it is imported only
when ``plan`` or ``erase`` runs, and the executor only when rows are counted or
erased (``eraser plan`` without a subject is reflection and planning).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from api.cli import display
from api.cli.errors import (
    EXIT_INTERRUPTED,
    EXIT_NOTHING_MATCHED,
    EXIT_OK,
    EXIT_UNVERIFIED,
    Refused,
    fail,
)
from api.cli.policy import parse_policy
from api.cli.tree import render_plan
from worker.catalog.reflection import reflect
from worker.database import check_connection, create_engine, describe_database_error, redact
from worker.exceptions import DatabaseUnavailable
from worker.planning.building import build_plan
from worker.planning.model import Plan

if TYPE_CHECKING:
    from models.erasure import ErasureReport
    from worker.execution.options import ExecutionOptions


@dataclass(frozen=True)
class Request:
    """Which database, which subject, which tables: what ``plan`` and ``erase`` share."""

    db: str | None
    db_env: str | None
    subject_columns: list[str]
    subject: str | None
    schemas: list[str]
    policies: list[str]

    def url(self) -> str:
        """The database URL, from ``--db`` or the variable ``--db-env`` names."""
        if (self.db is None) == (self.db_env is None):
            raise Refused("give exactly one of --db URL and --db-env VAR")
        if self.db is not None:
            return self.db
        value = os.environ.get(str(self.db_env))
        if not value:
            raise DatabaseUnavailable(f"${self.db_env}", "the environment variable is not set")
        return value


@dataclass(frozen=True)
class Run:
    """How ``erase`` runs (its options past the ``Request``)."""

    dry_run: bool
    confirmed: bool
    count: bool
    batch_size: int
    lock_timeout_ms: int
    fk_checks: str
    server_batches: bool
    compress_wal: bool
    progress: str
    #: A subject's own LIST partition: ``truncate``, ``drop`` or ``rows``.
    partitions: str
    as_json: bool


def load_plan(request: Request) -> tuple[sa.Engine, Plan]:
    """Connect, reflect and plan; the caller disposes of the engine."""
    url = request.url()
    engine = create_engine(url, existing=True)
    check_connection(engine)
    policies = dict(parse_policy(p) for p in request.policies)
    try:
        catalog = reflect(engine, request.schemas or None)
    except sa.exc.OperationalError as exc:
        engine.dispose()
        raise DatabaseUnavailable(redact(url), describe_database_error(exc)) from None
    try:
        return engine, build_plan(catalog, request.subject_columns, policies)
    except Exception:
        engine.dispose()
        raise


def show_plan(request: Request, as_json: bool) -> int:
    """``eraser plan``: the tree (or JSON), with counts when a subject is given."""
    engine, plan = load_plan(request)
    try:
        counts = None
        if request.subject is not None:
            from worker.execution.erasure import dry_run  # noqa: PLC0415 - only to count

            counts = dry_run(engine, plan, request.subject)
    finally:
        engine.dispose()
    if as_json:
        doc = plan.as_dict()
        if counts is not None:
            doc["counts"] = _report_json(counts)["tables"]
        _print_json(doc)
        return EXIT_OK
    display.out().print(render_plan(plan, counts))
    return EXIT_OK


def run_erase(request: Request, run: Run) -> int:
    """``eraser erase``: count, confirm, erase with progress, report."""
    from api.cli import confirm  # noqa: PLC0415
    from worker.execution.erasure import dry_run  # noqa: PLC0415

    if not run.dry_run and not run.confirmed and not confirm.possible():
        raise Refused(
            "refusing to erase without confirmation: stdin is not a terminal; "
            "pass --yes to erase from a script"
        )
    engine, plan = load_plan(request)
    subject = str(request.subject)
    try:
        counted = None
        if run.dry_run or run.count or not run.confirmed:
            counted = dry_run(engine, plan, subject, _options(run))
            if run.dry_run:
                return _show_report(counted, run.as_json)
            if not _matched(counted):
                return _show_report(_nothing(engine, plan, subject, run, counted), run.as_json)
        if not run.confirmed:
            assert counted is not None  # noqa: S101 - counted above when asking
            confirm.ask(counted, redact(request.url()), subject)
        report = _erase(engine, plan, subject, run, counted)
    except KeyboardInterrupt:
        fail("interrupted; committed batches stay done, run the command again to finish")
        return EXIT_INTERRUPTED
    finally:
        engine.dispose()
    return _show_report(report, run.as_json)


def _nothing(
    engine: sa.Engine, plan: Plan, subject: str, run: Run, counted: ErasureReport
) -> ErasureReport:
    """The report of an erasure whose count found nothing. Confirmed (``--yes``), the
    erasure runs: its own first check reads again, and erases what appeared since.
    Unconfirmed, nothing may be deleted: the count, which read every table, stands as
    the verification."""
    if run.confirmed:
        from worker.execution.erasure import erase  # noqa: PLC0415

        return erase(engine, plan, subject, _options(run))
    return counted.model_copy(update={"dry_run": False, "verified": True, "passes": 0})


def _matched(report: ErasureReport) -> bool:
    """Whether the subject has any row here (anonymized and nullified ones included)."""
    return any(t.rows for t in report.tables)


def _options(run: Run) -> ExecutionOptions:
    from worker.execution.options import ExecutionOptions  # noqa: PLC0415

    return ExecutionOptions(
        batch_size=run.batch_size,
        lock_timeout_ms=run.lock_timeout_ms,
        fk_checks=run.fk_checks,
        server_batches=run.server_batches,
        compress_wal=run.compress_wal,
        partitions=run.partitions,
    )


def _erase(
    engine: sa.Engine, plan: Plan, subject: str, run: Run, counted: ErasureReport | None
) -> ErasureReport:
    from api.cli.progress import open_progress  # noqa: PLC0415
    from worker.execution.erasure import erase  # noqa: PLC0415

    total = counted.total_rows if counted is not None else None
    with open_progress(run.progress, total) as progress:
        return erase(engine, plan, subject, _options(run), progress)


def _show_report(report: ErasureReport, as_json: bool) -> int:
    """Print the report; the exit status it calls for (``EXIT_NOTHING_MATCHED`` when
    the subject had no row, in a dry run or an erasure)."""
    if as_json:
        _print_json({**_report_json(report), "nothing_matched": not _matched(report)})
    elif not _matched(report):
        display.out().print("nothing matched: the subject has no row in this database")
    else:
        display.out().print(display.report(report))
    if not report.dry_run and not report.verified:
        return EXIT_UNVERIFIED
    return EXIT_OK if _matched(report) else EXIT_NOTHING_MATCHED


def _report_json(report: ErasureReport) -> dict[str, Any]:
    return {
        "dry_run": report.dry_run,
        "tables": [
            {"table": t.table, "action": t.action.value, "rows": t.rows} for t in report.tables
        ],
        "total_rows": report.total_rows,
        "verified": report.verified,
        "passes": report.passes,
        "schema_fingerprint": report.schema_fingerprint,
        "elapsed_seconds": report.elapsed_seconds,
        "warnings": report.warnings,
        "checked_by_eraser": report.checked_by_eraser,
        "batched_in_server": report.batched_in_server,
        "wal_compression": report.wal_compression,
        "partitions_removed": report.partitions_removed,
    }


def _print_json(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
