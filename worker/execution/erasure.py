"""Execute a plan: remove the subject's rows in short, row-locked batches, or count
what that would do.

Each batch is its own transaction:

    BEGIN; SET LOCAL lock_timeout; SELECT key ... FOR UPDATE; DELETE ... WHERE key IN (...); COMMIT

so every lock is brief and every committed state is foreign-key consistent (children
always go first; see ``walk``). A final count verifies that nothing of the subject
remains; if triggers or concurrent writers re-created rows, the walk runs again
(bounded).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy.engine import Engine

from models.erasure import ErasureReport, TableAction, TableOutcome
from worker.exceptions import ReferenceChecksUnavailable
from worker.execution.ledger import kept
from worker.execution.options import ExecutionOptions, ProgressCallback
from worker.execution.partial import PartiallyErased, partially_erased
from worker.execution.partitions import predicted
from worker.execution.preflight import count, deep_enough, deep_statements, preflight
from worker.execution.reference_checks import shortcuts
from worker.execution.report import report
from worker.execution.walk import Walker
from worker.faults import database_failures
from worker.planning.model import REMOVING, EdgeMode, Plan
from worker.planning.predicates import Predicates


@database_failures
def dry_run(
    engine: Engine, plan: Plan, subject: object, options: ExecutionOptions | None = None
) -> ErasureReport:
    """Count what an erasure would do, in a read-only transaction that takes no row locks."""
    opts = options or ExecutionOptions()
    started = time.monotonic()
    preds = Predicates(plan, subject)
    dialect = plan.dialect
    outcomes: list[TableOutcome] = []
    with engine.connect() as conn, conn.begin():
        dialect.begin_read_only(conn)
        dialect.bind_subject(conn, preds.session_values())
        try:
            with deep_statements():
                preds = deep_enough(conn, plan, preds)
                preflight(conn, plan, preds)
                for table in plan.order:
                    action = plan.actions[table]
                    if action is TableAction.KEEP:
                        continue
                    rows = count(conn, plan, table, preds.remaining(table))
                    outcomes.append(TableOutcome(table=str(table), action=action, rows=rows))
                for table in plan.nullified:
                    rows = sum(count(conn, plan, table, p) for p in preds.nullify_targets(table))
                    outcomes.append(
                        TableOutcome(table=str(table), action=TableAction.NULLIFY, rows=rows)
                    )
                for table in plan.reassigned:
                    targets = preds.nullify_targets(table, EdgeMode.REASSIGN)
                    rows = sum(count(conn, plan, table, p) for p in targets)
                    outcomes.append(
                        TableOutcome(table=str(table), action=TableAction.REASSIGN, rows=rows)
                    )
                whole = predicted(conn, plan, preds, opts.partitions)
        finally:
            dialect.end_read_only(conn)
    return ErasureReport(
        dry_run=True,
        tables=outcomes,
        total_rows=sum(o.rows for o in outcomes if o.action in REMOVING),
        verified=False,
        passes=0,
        schema_fingerprint=plan.fingerprint,
        warnings=list(plan.warnings),
        elapsed_seconds=round(time.monotonic() - started, 3),
        partitions_removed=whole,
    )


@database_failures
def erase(
    engine: Engine,
    plan: Plan,
    subject: object,
    options: ExecutionOptions | None = None,
    progress: ProgressCallback | None = None,
    lock_scope: Sequence[str] = (),
) -> ErasureReport:
    """Remove the subject's rows as planned and verify that none remain.

    ``lock_scope`` names the erasure for the per-subject lock (service, subject kind);
    the subject value is hashed into the lock key and never appears in it.
    """
    opts = options or ExecutionOptions()
    started = time.monotonic()
    dialect = plan.dialect
    lock_parts = [*lock_scope, *subject_lock_parts(plan, subject)]
    with (
        engine.connect() as conn,
        dialect.erasure_session(conn, opts.lock_timeout_ms),
        kept(opts.ledger, conn, dialect, opts.subject_lock_wait_seconds),
    ):
        if opts.fk_checks == "eraser":
            # Asked for explicitly: refused at once, not only once the subject has rows.
            with conn.begin():
                refusal = dialect.reference_checks_refusal(conn)
            if refusal is not None:
                raise ReferenceChecksUnavailable(refusal)
        walker = Walker(conn, plan, subject, opts, progress, started)
        dialect.bind_subject(conn, walker.preds.session_values())
        if walker.verify() == 0:
            # Nothing of the subject here (common: most services hold nothing of a
            # given subject): one read transaction, no lock, no walk.
            return report(plan, walker.outcomes(), True, 0, started, [])
        with dialect.subject_lock(engine, lock_parts, opts.subject_lock_wait_seconds):
            with conn.begin():
                with deep_statements():
                    preflight(conn, plan, deep_enough(conn, plan, walker.preds))
                walker.checks.shortcuts = shortcuts(conn, plan, opts.fk_checks)
                walker.tx.compression = dialect.wal_compression(conn, opts.compress_wal)
            passes = 0
            remaining = 1
            try:
                while remaining and passes < opts.max_passes:
                    passes += 1
                    walker.walk()
                    dialect.flush_commits(conn)
                    remaining = walker.verify()
            except Exception as exc:
                failure = partially_erased(exc, walker.outcomes())
                if failure is exc:
                    raise
                raise failure from (exc if isinstance(failure, PartiallyErased) else None)
        done = report(
            plan,
            walker.outcomes(),
            remaining == 0,
            passes,
            started,
            sorted(str(t) for t in walker.checks.checked),
            sorted(str(t) for t in walker.server.in_server),
            walker.tx.compression.in_effect,
        )
        whole = walker.partitions
        return done.model_copy(
            update={
                "partitions_removed": list(dict.fromkeys(whole.removed)),
                "warnings": list(dict.fromkeys(done.warnings + whole.notes)),
            }
        )


def subject_lock_parts(plan: Plan, subject: object) -> list[str]:
    """What names a subject for its lock: the anchor columns and the value as the
    database sees it, so ``1`` and ``"1"``, or columns listed in another order, lock
    the same subject."""
    preds = Predicates(plan, subject)
    anchors = sorted((t, c) for t, cols in plan.anchors.items() for c in cols)
    value = preds.subject_value(*anchors[0]) if anchors else subject
    return [*(f"{t}.{c}" for t, c in anchors), repr(value)]
