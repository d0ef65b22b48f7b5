"""Execute a plan: remove the subject's rows in short, row-locked batches.

The walk is a batched cascade. For every anchor table (children first), the
subject's rows are read in key order, ``batch_size`` at a time; before a batch is
removed, the rows referencing it are removed the same way (``= ANY(keys)`` lookups
through the foreign-key index), recursively. Each removal is its own transaction:

    BEGIN; SET LOCAL lock_timeout; SELECT key ... FOR UPDATE; DELETE ... WHERE key IN (...); COMMIT

so every lock is brief and every committed state is foreign-key consistent (children
always go first). Nothing is remembered between batches but the position of the
current walk, so a re-run after a crash simply finds what is left. A final count
verifies that nothing of the subject remains; if triggers or concurrent writers
re-created rows, the walk runs again (bounded).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from models.erasure import ErasureReport, TableAction, TableOutcome
from worker.catalog import (
    MYSQL,
    NO_ACTION,
    POSTGRESQL,
    RESTRICT,
    SET_DEFAULT,
    SET_NULL,
    SQLITE,
    ForeignKey,
    TableName,
)
from worker.dialects import (
    RowIdentity,
    WalCompression,
    addressed_by,
    as_driver_gives,
    begin_batch,
    begin_read_only,
    checks_off_unsafe,
    defer_constraints,
    end_read_only,
    erasure_session,
    flush_commits,
    is_foreign_key_violation,
    key_in,
    may_switch_off_checks,
    pg_array,
    referencing_constraints,
    row_address,
    subject_lock,
    wal_compression,
)
from worker.exceptions import (
    CrossSubjectReference,
    KeptRowsBlock,
    ReferenceChecksUnavailable,
    UnsatisfiablePlan,
    UnsupportedTable,
)
from worker.faults import database_failures
from worker.planner import (
    MAX_UNROLL,
    REMOVING,
    CycleStrategy,
    Edge,
    EdgeMode,
    Plan,
    Predicates,
    is_not,
    key_in_select,
)
from worker.prepared import Prepared
from worker.serverloop import (
    MIN_SERVER_VERSION,
    OVERFLOW,
    PREFIX,
    REFERENCED,
    LoopSpec,
    Node,
    Reference,
    ServerLoop,
    Sweep,
    aggregated,
    driver_literals,
    loop_type,
)

#: Attempts at removing a batch when writers keep adding references to it.
_FK_RACE_ATTEMPTS = 5
#: Set on a foreign-key violation that outlived a batch's attempts.
_EXHAUSTED = "eraser_attempts_exhausted"
#: Rows referencing one batch of parents go in one transaction of up to this many
#: batches' worth (a typical fan-out fits in one statement; a huge one is split).
_CHILD_BATCH_FACTOR = 4
#: With Eraser checking references, a batch takes the rows referencing it along in its
#: transaction: up to this many batches' worth of rows in all, else it is made smaller.
_TXN_ROWS_FACTOR = 16

#: How long one call of the server-side loop runs its batches before reporting back.
_LOOP_SECONDS = 0.2
#: Under a shorter ``statement_timeout`` the batches go from the client (a call of the
#: loop is one statement; its last batch may run past the call's time).
_LOOP_MIN_STATEMENT_TIMEOUT_MS = 5000

#: EXISTS checks per verification statement.
_CHECKS_PER_STATEMENT = 30

#: Who checks the references into a batch of parents as it goes (``fk_checks``).
#: ``database``: the database's own per-row foreign-key triggers. ``eraser``
#: (PostgreSQL): Eraser, under the batch's row locks (see ``_Shortcut``); the role
#: must be a superuser or be granted ``SET ON PARAMETER session_replication_role``.
#: ``auto``: ``eraser`` where the role may have it, else ``database``.
FK_CHECKS = ("auto", "database", "eraser")


@dataclass(frozen=True)
class ExecutionOptions:
    #: Rows per transaction.
    batch_size: int = 2000
    #: How long one statement may wait for a row lock before the batch fails.
    lock_timeout_ms: int = 5000
    #: How long to wait for another erasure of the same subject to finish.
    subject_lock_wait_seconds: float = 600.0
    #: Passes of the walk before giving up on verification.
    max_passes: int = 3
    #: PostgreSQL: commit batches without waiting for the WAL flush, then make the
    #: whole walk durable with one synchronous commit before verifying. A server crash
    #: can undo the last batches, never a verified erasure (a re-run finds them).
    fast_commit: bool = True
    #: ``time.monotonic()`` value after which the erasure stops at the next batch
    #: boundary by raising ``SliceEnded`` (a task continues it in a new delivery).
    deadline: float | None = None
    #: Who checks references into removed rows: one of ``FK_CHECKS``.
    fk_checks: str = "auto"
    #: PostgreSQL: run the batches of the common walks inside the server, several to a
    #: round trip (``worker.serverloop``); off, every statement is a round trip.
    server_batches: bool = True
    #: PostgreSQL: the batches write their full-page images to the WAL compressed
    #: (lz4), where the role may and the server does not already; about half the WAL
    #: (``worker.dialects.wal_compression``).
    compress_wal: bool = True

    def __post_init__(self) -> None:
        if self.fk_checks not in FK_CHECKS:
            raise ValueError(f"fk_checks must be one of {', '.join(FK_CHECKS)}")


@dataclass(frozen=True)
class Progress:
    """Reported after every committed batch."""

    table: str
    action: TableAction
    rows: int
    total_rows: int
    elapsed_seconds: float
    rows_by_table: dict[str, int]
    #: The longest batch transaction the server-side loop ran for this report (0 for
    #: a batch run from the client).
    server_batch_seconds: float = 0.0


ProgressCallback = Callable[[Progress], None]


class SliceEnded(Exception):
    """The erasure reached ``ExecutionOptions.deadline`` between two batches.

    Everything counted in ``tables`` is committed (and durable): running the same plan
    again continues from there, as after a crash, since predicates are re-evaluated.
    """

    def __init__(self, tables: list[TableOutcome]) -> None:
        super().__init__("time slice ended")
        self.tables = tables


@database_failures
def dry_run(engine: Engine, plan: Plan, subject: object) -> ErasureReport:
    """Count what an erasure would do, in a read-only transaction that takes no row locks."""
    started = time.monotonic()
    preds = Predicates(plan, subject)
    dialect = plan.catalog.dialect
    outcomes: list[TableOutcome] = []
    with engine.connect() as conn, conn.begin():
        begin_read_only(conn, dialect)
        try:
            with deep_statements():
                preds = deep_enough(conn, plan, preds)
                _preflight(conn, plan, preds)
                for table in plan.order:
                    action = plan.actions[table]
                    if action is TableAction.KEEP:
                        continue
                    rows = _count(conn, plan, table, preds.remaining(table))
                    outcomes.append(TableOutcome(table=str(table), action=action, rows=rows))
                for table in plan.nullified:
                    rows = sum(_count(conn, plan, table, p) for p in preds.nullify_targets(table))
                    outcomes.append(
                        TableOutcome(table=str(table), action=TableAction.NULLIFY, rows=rows)
                    )
        finally:
            end_read_only(conn, dialect)
    return ErasureReport(
        dry_run=True,
        tables=outcomes,
        total_rows=sum(o.rows for o in outcomes if o.action in REMOVING),
        verified=False,
        passes=0,
        schema_fingerprint=plan.fingerprint,
        warnings=list(plan.warnings),
        elapsed_seconds=round(time.monotonic() - started, 3),
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
    dialect = plan.catalog.dialect
    lock_parts = [*lock_scope, *subject_lock_parts(plan, subject)]
    with engine.connect() as conn, erasure_session(conn, dialect, opts.lock_timeout_ms):
        if opts.fk_checks == "eraser":
            # Asked for explicitly: refused at once, not only once the subject has rows.
            with conn.begin():
                refusal = reference_checks_refusal(conn, dialect)
            if refusal is not None:
                raise ReferenceChecksUnavailable(refusal)
        walker = _Walker(conn, plan, subject, opts, progress, started)
        if walker.verify() == 0:
            # Nothing of the subject here (common: most services hold nothing of a
            # given subject): one read transaction, no lock, no walk.
            return _report(plan, walker.outcomes(), True, 0, started, [])
        with subject_lock(engine, dialect, lock_parts, opts.subject_lock_wait_seconds):
            with conn.begin():
                with deep_statements():
                    _preflight(conn, plan, deep_enough(conn, plan, walker.preds))
                walker.shortcuts = _shortcuts(conn, plan, opts.fk_checks)
                walker.compression = wal_compression(conn, dialect, opts.compress_wal)
            passes = 0
            remaining = 1
            while remaining and passes < opts.max_passes:
                passes += 1
                walker.walk()
                flush_commits(conn, dialect)
                remaining = walker.verify()
        checked = sorted(str(t) for t in walker.checked)
        served = sorted(str(t) for t in walker.in_server)
        return _report(
            plan,
            walker.outcomes(),
            remaining == 0,
            passes,
            started,
            checked,
            served,
            walker.compression.in_effect,
        )


@database_failures
def nothing_to_erase(
    engine: Engine, plan: Plan, subject: object, version: ColumnElement[Any] | None = None
) -> tuple[ErasureReport | None, Any]:
    """The report of an erasure with nothing to do, or None when the subject has rows
    here: one read statement, outside any transaction, no lock. Most services hold
    nothing of a given subject. ``version`` (the schema's version token) is read in
    the same statement and returned with it, for the caller to check the plan."""
    return NothingCheck(plan, version, engine.dialect).run(engine, subject)


class NothingCheck:
    """``nothing_to_erase`` for one plan, built once and run for many subjects.

    The verification's ``EXISTS`` checks (and the schema's version token, when given)
    with the subject in parameters; on PostgreSQL each statement is prepared once per
    connection (``worker.prepared``)."""

    def __init__(self, plan: Plan, version: ColumnElement[Any] | None, dialect: sa.Dialect) -> None:
        self.plan = plan
        self.preds = Predicates(plan, None, parametric=True)
        self.with_version = version is not None
        self.statements = _verification(plan, self.preds, version)
        self.prepared: list[Prepared] | None = None
        if plan.catalog.dialect == POSTGRESQL:
            self.prepared = [Prepared(stmt, dialect) for stmt in self.statements]

    def run(self, engine: Engine, subject: object) -> tuple[ErasureReport | None, Any]:
        started = time.monotonic()
        params = self.preds.bind_values(subject)
        left = 0
        value: Any = None
        with engine.connect() as plain:
            conn = plain.execution_options(isolation_level="AUTOCOMMIT")
            for i, statement in enumerate(self.statements):
                if self.prepared is not None:
                    row = tuple(self.prepared[i].run(conn, params).one())
                else:
                    row = tuple(conn.execute(statement, params).one())
                if i == 0 and self.with_version:
                    value, row = row[0], row[1:]
                left += sum(1 for found in row if found)
        if left:
            return None, value
        return _report(self.plan, _outcomes(self.plan, {}), True, 0, started, []), value


def _outcomes(plan: Plan, counts: dict[tuple[TableName, TableAction], int]) -> list[TableOutcome]:
    """Rows per table and action, in plan order; kept tables left out."""
    result = []
    for table in plan.order:
        action = plan.actions[table]
        if action is TableAction.KEEP:
            continue
        rows = counts.get((table, action), 0)
        result.append(TableOutcome(table=str(table), action=action, rows=rows))
    for table in plan.nullified:
        rows = counts.get((table, TableAction.NULLIFY), 0)
        result.append(TableOutcome(table=str(table), action=TableAction.NULLIFY, rows=rows))
    return result


def _verification(
    plan: Plan, preds: Predicates, extra: ColumnElement[Any] | None
) -> list[sa.Select[Any]]:
    """The verification's statements: one ``EXISTS`` column per table that could hold
    the subject's rows (``extra`` first, in the first statement), a few dozen a
    statement.

    A table in ``plan.verifiable_by_own_column`` is checked through its own subject
    column(s) only (an index lookup); the others with their whole membership
    predicate. See there for why that is the same question."""
    checks: list[ColumnElement[bool]] = []
    for table in plan.order:
        action = plan.actions[table]
        if action is TableAction.DELETE_IF_ORPHANED or action is TableAction.KEEP:
            continue
        target = plan.info(table).table
        if table in plan.verifiable_by_own_column:
            direct = preds.direct(table, target)
            if not direct:
                continue
            where = sa.or_(*direct)
        else:
            where = preds.remaining(table)
        checks.append(sa.exists(sa.select(sa.literal(1)).select_from(target).where(where)))
    statements = []
    for i in range(0, max(len(checks), 1), _CHECKS_PER_STATEMENT):
        columns: list[ColumnElement[Any]] = list(checks[i : i + _CHECKS_PER_STATEMENT])
        if i == 0 and extra is not None:
            columns.insert(0, extra)
        if columns:
            statements.append(sa.select(*columns))
    return statements


def _report(
    plan: Plan,
    outcomes: list[TableOutcome],
    verified: bool,
    passes: int,
    started: float,
    checked: list[str],
    served: Sequence[str] = (),
    compression: str = "",
) -> ErasureReport:
    return ErasureReport(
        dry_run=False,
        tables=outcomes,
        total_rows=sum(o.rows for o in outcomes if o.action in REMOVING),
        verified=verified,
        passes=passes,
        schema_fingerprint=plan.fingerprint,
        warnings=list(plan.warnings),
        elapsed_seconds=round(time.monotonic() - started, 3),
        checked_by_eraser=checked,
        batched_in_server=list(served),
        wal_compression=compression,
    )


def subject_lock_parts(plan: Plan, subject: object) -> list[str]:
    """What names a subject for its lock: the anchor columns and the value as the
    database sees it, so ``1`` and ``"1"``, or columns listed in another order, lock
    the same subject."""
    preds = Predicates(plan, subject)
    anchors = sorted((t, c) for t, cols in plan.anchors.items() for c in cols)
    value = preds.subject_value(*anchors[0]) if anchors else subject
    return [*(f"{t}.{c}" for t, c in anchors), repr(value)]


def _count(conn: Connection, plan: Plan, table: TableName, where: ColumnElement[bool]) -> int:
    target = plan.info(table).table
    return int(
        conn.execute(sa.select(sa.func.count()).select_from(target).where(where)).scalar_one()
    )


def deep_enough(conn: Connection, plan: Plan, preds: Predicates) -> Predicates:
    """Predicates that follow every multi-table cycle as far as the subject's rows go,
    for the dry run's counts and the pre-flight checks.

    A cycle's membership is unrolled a fixed number of times round (a recursive CTE
    cannot join several tables on every database); a chain of rows going round it more
    often would be missed. So the depth doubles until one more time round finds no
    more rows; past ``MAX_UNROLL`` times round the plan is
    refused rather than run blind. Plans without such a cycle cost nothing. (The walk
    itself follows keys, to any depth, and the verification needs no depth: once the
    subject's own rows are gone nothing is reached through them.) Run it, and the
    statements built from what it returns, inside ``deep_statements()``."""
    cycles = list({id(c): c for c in plan.cycle_of.values() if len(c.tables) > 1}.values())
    if not cycles:
        return preds
    tables = sorted({t for c in cycles for t in c.tables})

    def counts(p: Predicates) -> list[int]:
        return [_count(conn, plan, t, p.member(t)) for t in tables]

    def unrolled(times: int) -> Predicates:  # (a new one: CTEs are cached per depth)
        return Predicates(plan, preds.subject, preds.parametric, times)

    #: How many times round the subject's rows are known to go, at least.
    known = 0

    def too_deep(why: str) -> UnsatisfiablePlan:
        return UnsatisfiablePlan(
            [str(t) for t in cycles[0].tables],
            f"the subject's rows go round it more than {known} times, {why}",
        )

    current = counts(preds)
    while True:
        try:
            # One more time round adds nothing: nothing further ever would.
            if counts(unrolled(preds.unroll + 1)) == current:
                return preds
            known = preds.unroll
            if preds.unroll >= MAX_UNROLL:
                raise too_deep("too deep for the pre-flight checks to follow")
            preds = unrolled(min(MAX_UNROLL, preds.unroll * 2))
            current = counts(preds)
        except sa.exc.OperationalError as exc:
            # The server's own limit on a statement's nesting (MariaDB's thread stack,
            # SQLite's expression depth), or a lost connection: refused, either way.
            if exc.connection_invalidated:
                raise
            raise too_deep("too deep for this database to follow in one statement") from None


@contextmanager
def deep_statements() -> Iterator[None]:
    """Room for SQLAlchemy to compile a deeply unrolled cycle (it recurses into each
    level of nested CTEs: about 25 levels fit in Python's default recursion limit)."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def _unread_actions(conn: Connection, plan: Plan) -> None:
    """PostgreSQL: refuse when a foreign key declared in a schema the catalog did not
    read (``--schema``) would have the database cascade, clear or reset rows there as
    this subject's rows go: rows nobody checked, which may be another subject's. (One
    that only refuses, NO ACTION or RESTRICT, is the database's to enforce.)"""
    if plan.catalog.dialect != POSTGRESQL:
        return
    read = {t.schema for t in plan.catalog.tables}
    removed = {(t.schema, t.name) for t, a in plan.actions.items() if a in REMOVING}
    rows = conn.execute(
        sa.text(
            "SELECT pn.nspname, p.relname, k.conname, cn.nspname FROM pg_constraint k"
            " JOIN pg_class p ON p.oid = k.confrelid"
            " JOIN pg_namespace pn ON pn.oid = p.relnamespace"
            " JOIN pg_class c ON c.oid = k.conrelid"
            " JOIN pg_namespace cn ON cn.oid = c.relnamespace"
            " WHERE k.contype = 'f' AND k.conparentid = 0 AND k.confdeltype IN ('c', 'n', 'd')"
            " AND cn.nspname <> ALL(:read) ORDER BY 1, 2, 3"
        ),
        {"read": sorted(read)},
    )
    for schema, table, constraint, other in rows:
        if (schema, table) in removed:
            raise UnsupportedTable(
                f"{schema}.{table}",
                f"foreign key {constraint} in schema {other}, which was not read, would"
                " change rows there that nobody checked; read that schema too",
            )


def _preflight(conn: Connection, plan: Plan, preds: Predicates) -> None:
    """Refuse, before any write, when kept rows or another subject's rows would be hit."""
    _unread_actions(conn, plan)
    for parent, action in sorted(plan.actions.items()):
        if action not in REMOVING:
            continue
        for fk in sorted(plan.catalog.incoming(parent), key=lambda f: (f.child, f.child_columns)):
            if fk.on_delete in (SET_NULL, SET_DEFAULT):
                continue
            child_action = plan.actions.get(fk.child)
            child = plan.info(fk.child).table
            refs = _refs_member(child, fk, preds)
            if child_action is None or child_action is TableAction.KEEP:
                rows = _count(conn, plan, fk.child, refs)
                if rows:
                    raise KeptRowsBlock(str(fk.child), _constraint(fk), rows)
            elif child_action is not TableAction.DELETE_IF_ORPHANED:
                guard = preds.guard(fk.child, child)
                if guard is not None:
                    rows = _count(conn, plan, fk.child, sa.and_(refs, sa.not_(guard)))
                    if rows:
                        raise CrossSubjectReference(str(fk.child), _constraint(fk), rows)


def _refs_member(child: sa.Table, fk: ForeignKey, preds: Predicates) -> ColumnElement[bool]:
    members = preds.member_cte(fk.parent)
    sub = sa.select(*[members.c[c] for c in fk.parent_columns])
    return key_in_select([child.c[c] for c in fk.child_columns], sub)


def _constraint(fk: ForeignKey) -> str:
    return fk.name or fk.describe()


@dataclass(frozen=True)
class _Shortcut:
    """How a batch of one parent table is removed with the database's per-row
    foreign-key triggers off for that one transaction (``fk_checks = "eraser"``).

    The triggers cost about three quarters of a batched erasure on PostgreSQL: each
    removed parent row runs two index lookups per referencing constraint (``NO
    ACTION``: is another row now holding the key, and does a child still point at
    it). Eraser does the same work once per batch and per constraint, set-wise, in
    the transaction that removes the batch:

        BEGIN; SET LOCAL session_replication_role = replica;
        DELETE FROM parent WHERE key IN (batch) RETURNING referenced columns;
        DELETE FROM child WHERE fk = ANY(referenced) ...;   -- ``sweep``, recursively
        UPDATE set_null_child SET fk = NULL WHERE fk = ANY(referenced);  -- ``clear``
        SELECT 1 FROM other_child WHERE fk = ANY(referenced) LIMIT 1;    -- ``probe``
        COMMIT

    Why nothing can be left pointing at a removed row: the DELETE locks every parent
    row of the batch first. A writer that adds or re-points a child must lock that
    parent row (``FOR KEY SHARE``, the database's own insert check, which stays on
    in the writer's session): one that did so before waits for, or was waited for
    by, the DELETE, so its row is committed and seen by the following statements,
    each with a fresh snapshot (read committed, which is checked); one that comes
    later waits for the COMMIT and then fails on the missing parent. The same holds
    one level down for every swept child. Only references the database declares
    are concerned, and every one of them into the table is known (the database-wide
    count of constraints must match the catalog's). A probe that finds a row, or a
    swept row whose subject column names another subject, rolls the batch back, and
    the batch goes the database's way (which then reports it).

    A batch with everything it sweeps stays under ``_TXN_ROWS_FACTOR`` batches of
    rows: past that it is rolled back and retried smaller, and a reference too wide
    even for one row is walked in batches of its own first.

    Only for tables, and children, without triggers of their own (replica mode
    would skip them) and outside cycles and partitioned tables.
    """

    #: Children removed with their parent (and their own children with them).
    sweep: tuple[ForeignKey, ...]
    #: ``ON DELETE SET NULL`` references, cleared as the database would.
    clear: tuple[ForeignKey, ...]
    #: Every other declared reference: none may remain.
    probe: tuple[ForeignKey, ...]

    @property
    def referenced(self) -> list[str]:
        cols = [c for fk in (*self.sweep, *self.clear, *self.probe) for c in fk.parent_columns]
        return list(dict.fromkeys(cols))


def reference_checks_refusal(conn: Connection, dialect: str) -> str | None:
    """Why Eraser may not check references itself on ``conn`` (``fk_checks`` "eraser"),
    or None when it may."""
    refusal = may_switch_off_checks(conn, dialect)
    if refusal is not None:
        return refusal
    level = conn.execute(sa.text("SELECT current_setting('transaction_isolation')")).scalar_one()
    if level != "read committed":
        # Each statement after the batch's DELETE must see rows committed meanwhile;
        # a transaction snapshot would hide a writer the DELETE waited for.
        return f"the connection's transactions are {level}, not read committed"
    return None


def _shortcuts(conn: Connection, plan: Plan, mode: str) -> dict[TableName, _Shortcut]:
    """The tables whose batches may be removed with Eraser checking the references."""
    dialect = plan.catalog.dialect
    if mode == "database" or (mode == "auto" and dialect != POSTGRESQL):
        return {}
    refusal = reference_checks_refusal(conn, dialect)
    if refusal is not None:
        if mode == "eraser":
            raise ReferenceChecksUnavailable(refusal)
        return {}
    declared = referencing_constraints(conn, dialect)
    unsafe = checks_off_unsafe(conn, dialect)
    found: dict[TableName, _Shortcut] = {}
    for table in plan.order:  # children first: a child's shortcut is known before
        shortcut = _shortcut(plan, table, declared, found, unsafe)
        if shortcut is not None:
            found[table] = shortcut
    return found


def _plain_table(plan: Plan, table: TableName, unsafe: set[tuple[str, str]]) -> bool:
    info = plan.info(table)
    return (
        not info.triggers
        and not info.partitioned
        and table not in plan.cycle_of
        and (table.schema, table.name) not in unsafe
    )


def _shortcut(
    plan: Plan,
    table: TableName,
    declared: dict[tuple[str, str], int],
    found: dict[TableName, _Shortcut],
    unsafe: set[tuple[str, str]],
) -> _Shortcut | None:
    if plan.actions[table] not in (TableAction.DELETE, TableAction.UNLINK):
        return None
    if not _plain_table(plan, table, unsafe):
        return None
    incoming = plan.catalog.incoming(table)
    real = [fk for fk in incoming if not _is_virtual(fk)]
    if len(real) != declared.get((table.schema, table.name), 0):
        return None  # a reference from a schema the catalog did not read
    sweep: list[ForeignKey] = []
    clear: list[ForeignKey] = []
    probe: list[ForeignKey] = []
    for fk in real:
        child = fk.child
        if (
            fk.is_self_reference
            or fk.on_delete == SET_DEFAULT
            or not _plain_table(plan, child, unsafe)
        ):
            return None
        if fk.on_delete == SET_NULL:
            if plan.actions.get(child) in REMOVING:
                # The subject's own rows may be behind it: a clear in a batch (nested under
                # a swept child, too) would strip them of the reference and leave them.
                return None
            referenced = {c for ref in plan.catalog.incoming(child) for c in ref.parent_columns}
            if set(fk.clearable) != set(fk.child_columns) or referenced & set(fk.child_columns):
                return None
            clear.append(fk)
        elif child in found and not any(_is_virtual(f) for f in plan.catalog.incoming(child)):
            # Removed with the parent, and the rows referencing it with it, recursively.
            sweep.append(fk)
        else:
            probe.append(fk)
    return _Shortcut(tuple(sweep), tuple(clear), tuple(probe))


def _is_virtual(fk: ForeignKey) -> bool:
    return (fk.name or "").startswith("virtual:")


class _StillReferenced(Exception):
    """A probe found a row referencing the batch: roll back, let the database decide."""


@dataclass
class _Gone:
    """What one DELETE removed, as the sweeps below it need it."""

    count: int
    #: Referenced column -> its values, one per removed row (aligned across columns).
    columns: dict[str, list[Any]]
    #: Whether a removed row belonged to another subject.
    foreign: bool
    #: The greatest key removed (keyset walks).
    last: tuple[Any, ...] | None


def _arrayable(type_: sa.types.TypeEngine[Any]) -> bool:
    """Types whose arrays the PostgreSQL driver decodes by itself."""
    return isinstance(type_, (sa.Integer, sa.String)) and not isinstance(type_, sa.Enum)


#: Actions the server-side loop carries out (it removes rows; anonymizing goes by client).
_LOOP_ACTIONS = (TableAction.DELETE, TableAction.UNLINK)


class _NoLoop(Exception):
    """A reference the server-side loop does not carry: the walk goes by client."""


@dataclass(frozen=True)
class _Loop:
    server: ServerLoop
    #: The (table, action) of each of the loop's counters.
    slots: list[tuple[TableName, TableAction]]
    leaf: bool


class _Overflow(Exception):
    """A batch with everything swept along would exceed a short transaction's rows."""

    def __init__(self, widest: ForeignKey | None) -> None:
        super().__init__("transaction budget exceeded")
        self.widest = widest


@dataclass
class _Row:
    rid: tuple[Any, ...]
    values: dict[str, Any]


@dataclass
class _Frame:
    table: TableName
    rids: set[tuple[Any, ...]]
    #: Index of the frame whose transaction must also remove this frame's rows.
    deferred_to: int | None = None
    group: list[tuple[TableName, list[_Row]]] = field(default_factory=list)


class _Walker:
    def __init__(
        self,
        conn: Connection,
        plan: Plan,
        subject: object,
        options: ExecutionOptions,
        progress: ProgressCallback | None,
        started: float,
    ) -> None:
        self.conn = conn
        self.plan = plan
        self.preds = Predicates(plan, subject)
        self.opts = options
        self.progress = progress
        self.started = started
        self.dialect = plan.catalog.dialect
        self.counts: dict[tuple[TableName, TableAction], int] = {}
        self.stack: list[_Frame] = []
        self._pending: dict[tuple[TableName, TableAction], int] = {}
        #: Parent tables whose batches go with Eraser checking the references.
        self.shortcuts: dict[TableName, _Shortcut] = {}
        #: Sweep references found too wide for one transaction: cleared beforehand.
        self._wide: set[ForeignKey] = set()
        #: Tables with at least one batch committed with Eraser checking references.
        self.checked: set[TableName] = set()
        #: Tables with rows removed or cleared by batches run inside the server.
        self.in_server: set[TableName] = set()
        #: How the batches compress their full-page images (known once rows are found).
        self.compression = WalCompression()
        #: Rows written by the current transaction (of its own table, and in all), and
        #: by each swept reference in it.
        self._txn_top = 0
        self._txn_rows = 0
        self._txn_swept: dict[ForeignKey, int] = {}
        #: Batch sizes made smaller for tables whose batches swept too many rows along.
        self._batch: dict[TableName, int] = {}
        #: Anchor tables whose walk has finished in this pass.
        self._done: set[TableName] = set()
        #: Whether the server-side loop can run here at all (known on first use), and
        #: how long one call of it may run.
        self._loop_ok: bool | None = None
        self._loop_seconds = _LOOP_SECONDS
        # Only tables the erasure touches: an unrelated table the engine could not
        # address (a partitioned table without a key) must not stop the erasure.
        touched = [*plan.actions, *plan.nullified]
        self.rid = {t: RowIdentity.of(plan.info(t), self.dialect) for t in touched}
        for table in touched:
            if self.rid[table].kind == "none" and not self._is_leaf(table):
                # Its rows cannot be taken one batch at a time with the rows referencing
                # them: the references would be left to the database, unseen.
                raise UnsupportedTable(
                    str(table),
                    "other tables reference it, and it has no primary key or NOT NULL"
                    " unique key to address its rows by",
                )
        self.needed: dict[TableName, list[str]] = {}
        for table in touched:
            cols: list[str] = []
            for edge in plan.children.get(table, []):
                cols += edge.fk.parent_columns
                if edge.fk.is_self_reference:
                    cols += edge.fk.child_columns
            for fk in plan.info(table).foreign_keys:
                if fk.is_self_reference and self.dialect == MYSQL:
                    # _split_self_pointing reads both sides, edge or not (a shared
                    # table's parent reference is no edge of the walk).
                    cols += [*fk.parent_columns, *fk.child_columns]
            self.needed[table] = list(dict.fromkeys(cols))

    # --- the walk ---------------------------------------------------------------------

    def walk(self) -> None:
        self._done.clear()
        for table in self.plan.order:
            if table in self.plan.anchors or table in self.plan.orphan_links:
                self._walk_anchor(table)
                self._done.add(table)

    def verify(self) -> int:
        """How many tables still hold rows of the subject (0 means verified).

        A table in ``plan.verifiable_by_own_column`` is checked through its own
        subject column(s) only (an index lookup); the others with their whole
        membership predicate. See there for why that is the same question.
        """
        with self.conn.begin():
            return self.verify_with(None)[0]

    def verify_with(self, extra: ColumnElement[Any] | None) -> tuple[int, Any]:
        """``verify`` inside the caller's transaction (or autocommit), with ``extra``
        read in the same statement; returns the count and ``extra``'s value."""
        left = 0
        value: Any = None
        # One round trip: a statement of EXISTS columns, a few dozen at a time.
        for i, statement in enumerate(_verification(self.plan, self.preds, extra)):
            row = tuple(self.conn.execute(statement).one())
            if i == 0 and extra is not None:
                value, row = row[0], row[1:]
            left += sum(1 for found in row if found)
        return left, value

    def outcomes(self) -> list[TableOutcome]:
        return _outcomes(self.plan, self.counts)

    def _anchor_where(self, table: TableName) -> ColumnElement[bool]:
        target = self.plan.info(table).table
        if table in self.plan.orphan_links:
            where = self.preds.orphan(table, target)
        else:
            where = sa.or_(*self.preds.direct(table, target))
        return where

    def _walk_anchor(self, table: TableName) -> None:
        where = self._anchor_where(table)
        self._walk(table, where)

    def _walk(self, table: TableName, where: ColumnElement[bool], ordered: bool = True) -> None:
        """Remove every row of ``table`` matching ``where``, batch by batch.

        ``ordered`` walks in key order with a keyset (``key > last``): used for anchors,
        whose predicate would otherwise rescan the rows already removed. Rows looked up
        through a parent's keys (``fk = ANY(keys)``) are bounded by those keys and need
        no order, which also keeps PostgreSQL from walking the whole primary key to
        satisfy an ORDER BY ... LIMIT.
        """
        n = self.opts.batch_size
        rid = self.rid[table]
        if self.plan.actions[table] is TableAction.ANONYMIZE:
            # Anonymized rows stay: skip those already done, or the walk would never end.
            where = sa.and_(where, sa.not_(self.preds.anonymized(table, self._t(table))))
        ordered = ordered or table in self.plan.cycle_of
        if self._is_leaf(table) or rid.kind == "none":
            loop = self._server_loop(table, where, leaf=True) if ordered else None
            if loop is not None and self._walk_in_server(table, loop):
                return
            limit = n if ordered else n * _CHILD_BATCH_FACTOR
            last: tuple[Any, ...] | None = None
            while True:
                cond = where if last is None else sa.and_(where, rid.after(self._t(table), last))
                with self._transaction():
                    done, last_key = self._remove_leaf_batch(table, cond, limit, ordered)
                if done < limit:
                    return
                if ordered:
                    if last is not None and last_key == last:
                        return  # a key that does not come back as read: no progress
                    last = last_key
        if self._direct(table) and self._walk_direct(table, where, ordered):
            return
        last = None
        previous: set[tuple[Any, ...]] = set()
        while True:
            cond = where if last is None else sa.and_(where, rid.after(self._t(table), last))
            rows = self._fetch(table, cond, n, ordered)
            if not rows:
                return
            keys = {r.rid for r in rows}
            if not ordered and keys == previous:
                return  # nothing could be removed; the verification count reports it
            previous = keys
            if table in self.plan.cycle_of:
                fresh, busy = self._split_in_progress(table, rows)
            else:
                fresh, busy = rows, []
            if busy:
                self._reached_in_progress(table, busy)
            if fresh:
                self._erase_rows(table, fresh)
            if ordered:
                if last is not None and rows[-1].rid == last:
                    # A key the driver does not send back as it read it: the same batch
                    # would come back for ever. The verification reports what is left.
                    return
                last = rows[-1].rid
            if len(rows) < n:
                return

    def _erase_rows(self, table: TableName, rows: list[_Row]) -> None:
        """Clear everything that references ``rows``, then remove them.

        A writer may commit a new referencing row between the two; the database then
        refuses the delete (a foreign-key violation, nothing written), so the
        references are cleared again, a bounded number of times. The last time, a
        second connection holds the rows locked while their references are cleared
        (``_erase_rows_holding``), so that writers wait instead of racing.
        """
        for attempt in range(1, _FK_RACE_ATTEMPTS + 1):
            try:
                if attempt == _FK_RACE_ATTEMPTS and self._may_hold(table):
                    self._erase_rows_holding(table, rows)
                else:
                    self._erase_rows_once(table, rows, optimistic=attempt == 1)
                return
            except sa.exc.IntegrityError as exc:
                if getattr(exc, _EXHAUSTED, False) or not is_foreign_key_violation(exc):
                    raise
                if attempt == _FK_RACE_ATTEMPTS:
                    # Not retried again by the batches this one is nested in: each level
                    # retrying would cost attempts ** depth statements.
                    setattr(exc, _EXHAUSTED, True)
                    raise

    def _may_hold(self, table: TableName) -> bool:
        """Whether a batch of ``table`` can be held locked from a second connection
        while its references are cleared: row locks (not SQLite, whose writers queue
        anyway) and no cycle (whose batches are removed together, as a group)."""
        return self.dialect in (POSTGRESQL, MYSQL) and table not in self.plan.cycle_of

    def _erase_rows_holding(self, table: TableName, rows: list[_Row]) -> None:
        """Lock ``rows`` (``FOR UPDATE``) in a transaction of a second connection, clear
        their references on this one, then remove them in the held transaction.

        A writer adding a reference to a locked row needs a share lock on it, so it
        waits and then fails, the row being gone; a writer that held such a lock first
        has committed before the lock was granted, and its row is cleared with the
        others. The references are cleared in their usual short transactions, which
        never lock the held rows, so nothing waits on itself."""
        main = self.conn
        with (
            main.engine.connect() as held,
            erasure_session(held, self.dialect, self.opts.lock_timeout_ms),
        ):
            try:
                self.conn = held
                with self._transaction():
                    target = self._t(table)
                    rid = self.rid[table]
                    where = rid.matches(target, [r.rid for r in rows], self.dialect)
                    lock = sa.select(*rid.select_columns(target)).where(where).with_for_update()
                    held.execute(lock).all()
                    self.conn = main
                    try:
                        # (Each reference's own walk keeps its transactions within budget.)
                        self._clear_references(table, rows, False, set())
                    finally:
                        self.conn = held
                    self._remove_rows(held, table, rows)
            finally:
                self.conn = main

    def _erase_rows_once(self, table: TableName, rows: list[_Row], optimistic: bool) -> None:
        cleared: set[ForeignKey] = set()
        while True:
            try:
                self._erase_rows_after(table, rows, optimistic, cleared)
                return
            except _Overflow:
                continue  # a reference now goes in batches of its own: clear it first

    def _clear_references(
        self, table: TableName, rows: list[_Row], optimistic: bool, cleared: set[ForeignKey]
    ) -> _Frame | None:
        """Clear (remove or null) the rows referencing ``rows``. Returns their frame, or
        None when a cycle deferred their removal to a batch further up."""
        depth = len(self.stack)
        frame = _Frame(table, {r.rid for r in rows})
        self.stack.append(frame)
        try:
            removing = self.plan.actions[table] in REMOVING
            for edge in self.plan.children.get(table, []):
                if edge.mode is not EdgeMode.DELETE and not removing:
                    continue
                if edge.fk in cleared:
                    continue
                if optimistic and (self._already_cleared(edge) or self._swept(table, edge)):
                    continue
                self._clear_edge(edge, rows)
                cleared.add(edge.fk)
        finally:
            self.stack.pop()
        if frame.deferred_to is not None and frame.deferred_to < depth:
            owner = self.stack[frame.deferred_to]
            owner.group.extend(frame.group)
            owner.group.append((table, rows))
            if frame.deferred_to < depth - 1:
                parent = self.stack[depth - 1]
                if parent.deferred_to is None or frame.deferred_to < parent.deferred_to:
                    parent.deferred_to = frame.deferred_to
            return None
        return frame

    def _erase_rows_after(
        self, table: TableName, rows: list[_Row], optimistic: bool, cleared: set[ForeignKey]
    ) -> None:
        frame = self._clear_references(table, rows, optimistic, cleared)
        if frame is None:
            return
        shortcut = self.shortcuts.get(table)
        if shortcut is not None and not frame.group:
            try:
                with self._transaction(checks_off=True):
                    self._remove_checked(table, rows, shortcut)
                self.checked.add(table)
                return
            except _Overflow as over:
                if over.widest is not None:
                    self._wide.add(over.widest)
                    raise  # that reference is cleared first, then the batch again
                # (an overflow always names a reference; if not, the database's way)
            except _StillReferenced:
                pass  # rolled back: the database checks this batch, and reports it
        with self._transaction() as conn:
            if frame.group:
                self._remove_group([*frame.group, (table, rows)])
            else:
                self._remove_rows(conn, table, rows)

    def _already_cleared(self, edge: Edge) -> bool:
        """Whether the rows behind ``edge`` are almost surely gone: the child is an anchor
        whose walk finished in this pass. Its rows are then not looked up again for each
        parent batch (that lookup costs as much as the delete); should one remain (a
        NULL subject column, a late writer), the database refuses the parent's delete
        with a foreign-key violation, nothing is written, and the batch is retried with
        every reference cleared. Only for references the database enforces at once."""
        fk = edge.fk
        return (
            edge.mode is EdgeMode.DELETE
            # An anonymized parent is updated, not deleted: no check would catch a row
            # left behind (a NULL subject column), so its references are looked up.
            and self.plan.actions.get(fk.parent) is not TableAction.ANONYMIZE
            and fk.child in self._done
            and fk.on_delete in (NO_ACTION, RESTRICT)
            and not fk.deferrable
            and not (fk.name or "").startswith("virtual:")
            and fk.child not in self.plan.cycle_of
        )

    def _clear_edge(self, edge: Edge, rows: list[_Row]) -> None:
        fk = edge.fk
        refs = _sorted_keys(
            {
                tuple(r.values[c] for c in fk.parent_columns)
                for r in rows
                if all(r.values[c] is not None for c in fk.parent_columns)
            }
        )
        if not refs or edge.mode is EdgeMode.DATABASE:
            return
        child = self._t(fk.child)
        cols = [child.c[c] for c in fk.child_columns]
        n = self.opts.batch_size
        for chunk in _chunks(refs, n):
            where = key_in(cols, chunk, self.dialect)
            if edge.mode is EdgeMode.NULLIFY:
                if self.plan.actions.get(fk.child) in REMOVING:
                    # The subject's own rows behind a SET NULL reference go first: the
                    # database would clear their key, which may hold the subject column.
                    member = self.preds.member(fk.child, child)
                    own = sa.and_(where, member)
                    # Not the rows being erased further up (a SET NULL self-reference or
                    # cycle among the subject's rows): they go in their own frame.
                    rid = self.rid[fk.child]
                    for frame in self.stack:
                        if frame.table == fk.child and frame.rids:
                            busy = rid.matches(child, _sorted_keys(frame.rids), self.dialect)
                            own = sa.and_(own, sa.not_(busy))
                    self._walk(fk.child, own, ordered=False)
                self._nullify(fk, where)
                continue
            guard = self.preds.guard(fk.child, child)
            if guard is not None:
                where = sa.and_(where, guard)
            if fk.is_self_reference:
                current = self.stack[-1].rids
                rid = self.rid[fk.child]
                batch = rid.matches(child, _sorted_keys(current), self.dialect)
                where = sa.and_(where, sa.not_(batch))
            self._walk(fk.child, where, ordered=False)

    def _nullify(self, fk: ForeignKey, where: ColumnElement[bool]) -> None:
        """Clear an ON DELETE SET NULL reference on rows that are not erased themselves."""
        child = self._t(fk.child)
        rid = self.rid[fk.child]
        with self._transaction() as conn:
            if self.plan.actions.get(fk.child) in REMOVING and rid.kind != "none":
                # Leave the subject's own rows alone. Their keys are found first: MariaDB
                # cannot parse a CTE inside an UPDATE, and SQLite reports no row count
                # for one.
                others = sa.and_(where, is_not(self.preds.member(fk.child, child)))
                found = sa.select(*rid.select_columns(child)).select_from(child).where(others)
                keys = [tuple(r) for r in conn.execute(found)]
                if not keys:
                    return
                where = rid.matches(child, keys, self.dialect)
            stmt = sa.update(child).where(where).values(dict.fromkeys(fk.clearable))
            self._record(fk.child, TableAction.NULLIFY, conn.execute(stmt).rowcount)

    # --- cycles -------------------------------------------------------------------------

    def _split_in_progress(
        self, table: TableName, rows: list[_Row]
    ) -> tuple[list[_Row], list[tuple[int, _Row]]]:
        fresh: list[_Row] = []
        busy: list[tuple[int, _Row]] = []
        for row in rows:
            owner = next(
                (i for i, f in enumerate(self.stack) if f.table == table and row.rid in f.rids),
                None,
            )
            if owner is None:
                fresh.append(row)
            else:
                busy.append((owner, row))
        return fresh, busy

    def _reached_in_progress(self, table: TableName, busy: list[tuple[int, _Row]]) -> None:
        """Rows of ``table`` already being erased further up reference the current frame's
        rows: clear a nullable reference, or remove them together in one transaction."""
        current = self.stack[-1]
        fks = [
            e.fk
            for e in self.plan.children.get(current.table, [])
            if e.mode is EdgeMode.DELETE and e.fk.child == table
        ]
        nullable = [fk for fk in fks if fk.nullable]
        if nullable and len(nullable) == len(fks):
            rid = self.rid[table]
            target = self._t(table)
            with self._transaction() as conn:
                for fk in nullable:
                    conn.execute(
                        sa.update(target)
                        .where(rid.matches(target, [r.rid for _, r in busy], self.dialect))
                        .values(dict.fromkeys(self._breaking_columns(fk)))
                    )
            return
        cycle = self.plan.cycle_of.get(table)
        if cycle is None or (not cycle.hard and cycle.strategy is not CycleStrategy.TREE):
            raise UnsatisfiablePlan([str(table), str(current.table)], "unexpected reference cycle")
        if self.dialect == MYSQL:
            raise UnsatisfiablePlan(
                [str(table), str(current.table), str(table)],
                "rows reference each other through NOT NULL keys; MySQL cannot defer the check",
            )
        owner = min(i for i, _ in busy)
        if current.deferred_to is None or owner < current.deferred_to:
            current.deferred_to = owner

    def _breaking_columns(self, fk: ForeignKey) -> list[str]:
        """The columns to set NULL to break ``fk`` on a row: its nullable columns, but
        not the subject column or a column other rows reference (``(tenant_id,
        parent_id)``: only ``parent_id``), unless nothing else would do."""
        referenced = {c for ref in self.plan.catalog.incoming(fk.child) for c in ref.parent_columns}
        subject = set(self.plan.anchors.get(fk.child, ()))
        preferred = [c for c in fk.clearable if c not in referenced and c not in subject]
        return preferred or list(fk.clearable)

    def _remove_group(self, group: list[tuple[TableName, list[_Row]]]) -> None:
        """Remove rows that reference each other through NOT NULL keys, all at once."""
        strategy = next(
            (
                self.plan.cycle_of[t].strategy
                for t, _ in group
                if t in self.plan.cycle_of and self.plan.cycle_of[t].hard
            ),
            CycleStrategy.DEFERRED,
        )
        cycle = next((self.plan.cycle_of[t] for t, _ in group if t in self.plan.cycle_of), None)
        rank = {t: i for i, t in enumerate(cycle.removal_order)} if cycle else {}
        merged: dict[TableName, list[_Row]] = {}
        for table, rows in sorted(group, key=lambda g: rank.get(g[0], -1)):
            merged.setdefault(table, []).extend(rows)
        if self.dialect == POSTGRESQL and strategy is not CycleStrategy.DEFERRED:
            ctes = []
            for i, (table, rows) in enumerate(merged.items()):
                target = self._t(table)
                rid = self.rid[table]
                stmt = sa.delete(target).where(
                    rid.matches(target, [r.rid for r in rows], self.dialect)
                )
                ctes.append((table, stmt.returning(sa.literal(1).label("x")).cte(f"removed_{i}")))
            counts = sa.select(
                *[sa.select(sa.func.count()).select_from(c).scalar_subquery() for _, c in ctes]
            )
            result = self.conn.execute(counts).one()
            for (table, _), count in zip(ctes, result, strict=True):
                self._record(table, self.plan.actions[table], int(count))
            return
        defer_constraints(self.conn, self.dialect)
        for table, rows in merged.items():
            target = self._t(table)
            rid = self.rid[table]
            stmt = sa.delete(target).where(rid.matches(target, [r.rid for r in rows], self.dialect))
            self._record(table, self.plan.actions[table], self.conn.execute(stmt).rowcount)

    # --- batches ------------------------------------------------------------------------

    def _is_leaf(self, table: TableName) -> bool:
        if table in self.plan.cycle_of:
            return False
        removing = self.plan.actions.get(table) in REMOVING
        return not any(
            e.mode is EdgeMode.DELETE or removing for e in self.plan.children.get(table, [])
        )

    def _t(self, table: TableName) -> sa.Table:
        return self.plan.info(table).table

    def _fetch(
        self,
        table: TableName,
        where: ColumnElement[bool],
        limit: int,
        ordered: bool = True,
        lock: bool = False,
    ) -> list[_Row]:
        target = self._t(table)
        rid = self.rid[table]
        rid_cols = rid.select_columns(target)
        needed = self.needed[table]
        values = [as_driver_gives(target.c[c], self.dialect) for c in needed]
        stmt = sa.select(*rid_cols, *values).select_from(target).where(where).limit(limit)
        if ordered:
            stmt = stmt.order_by(*rid.order_by(target))
        if lock:
            stmt = stmt.with_for_update()
            raw = self.conn.execute(stmt).all()
        else:
            with self.conn.begin():
                raw = self.conn.execute(stmt).all()
        k = len(rid_cols)
        return [_Row(tuple(r[:k]), dict(zip(needed, r[k:], strict=True))) for r in raw]

    def _remove_leaf_batch(
        self, table: TableName, where: ColumnElement[bool], limit: int, ordered: bool
    ) -> tuple[int, tuple[Any, ...] | None]:
        """Inside the caller's transaction, remove up to ``limit`` rows matching ``where``
        from a table nothing references. Returns the count and the last key."""
        rid = self.rid[table]
        target = self._t(table)
        action = self.plan.actions[table]
        if rid.kind == "none":
            delete = sa.delete(target).where(where).with_dialect_options(mysql_limit=limit)
            count = int(self.conn.execute(delete).rowcount)
            self._record(table, action, count)
            return count, None
        if self.dialect == POSTGRESQL and not self.plan.info(table).rules:
            return self._remove_leaf_batch_pg(table, where, limit, ordered)
        # (A PostgreSQL table with rules on its writes cannot take a DELETE in a WITH
        # query or with RETURNING: it goes by key, as on MySQL.)
        # MySQL cannot delete from a table it selects from in a subquery: lock the batch
        # in key order first, then remove it by key.
        rows = self._fetch(table, where, limit, ordered, lock=True)
        if rows:
            # The subject's column is checked again with the keys: a key that named
            # another row must not take it along.
            self._remove_rows(self.conn, table, rows)
        return len(rows), rows[-1].rid if rows else None

    def _remove_leaf_batch_pg(
        self, table: TableName, where: ColumnElement[bool], limit: int, ordered: bool
    ) -> tuple[int, tuple[Any, ...] | None]:
        """PostgreSQL: one statement, ``DELETE ... WHERE ctid = ANY(ARRAY(SELECT ctid ...
        LIMIT n))``. The DELETE (or UPDATE) takes the row locks itself; addressing rows by
        ``ctid`` makes it a TID scan (measured 2x faster than ``key IN (SELECT key ...)``
        and about twice as fast as locking first). A row updated meanwhile has a new
        ``ctid`` and is skipped, for the next batch or the verification pass to find.
        Partitioned tables repeat ``ctid`` across partitions, so they go by key."""
        rid = self.rid[table]
        target = self._t(table)
        action = self.plan.actions[table]
        partitioned = self.plan.info(table).partitioned
        address = rid.order_by(target) if partitioned else [row_address()]
        sub = sa.select(*address).select_from(target).where(where).limit(limit)
        if ordered:
            sub = sub.order_by(*rid.order_by(target))
        chosen = key_in_select(address, sub) if partitioned else addressed_by(sub)
        stmt: sa.Delete | sa.Update
        if action is TableAction.ANONYMIZE:
            stmt = sa.update(target).where(chosen).values(dict(self.plan.policies[table].set))
        else:
            stmt = sa.delete(target).where(chosen)
        if not ordered:
            count = int(self.conn.execute(stmt).rowcount)
            self._record(table, action, count)
            return count, None
        if rid.kind == "key":
            # The count and the greatest key, not a row per removed row.
            gone = self._delete(stmt, target, (), None, rid.select_columns(target), rid.sort_key)
            self._record(table, action, gone.count)
            return gone.count, gone.last
        keys = [tuple(r) for r in self.conn.execute(stmt.returning(*rid.select_columns(target)))]
        self._record(table, action, len(keys))
        return len(keys), max(keys, key=rid.sort_key) if keys else None

    def _direct(self, table: TableName) -> bool:
        """Whether each batch of ``table`` can go in one transaction with every
        reference into it: all of them are swept, cleared or known empty."""
        shortcut = self.shortcuts.get(table)
        if shortcut is None:
            return False
        for edge in self.plan.children.get(table, []):
            if self._swept(table, edge) or self._already_cleared(edge):
                continue
            nulled_only = self.plan.actions.get(edge.fk.child) not in REMOVING
            if edge.mode is EdgeMode.NULLIFY and edge.fk in shortcut.clear and nulled_only:
                continue
            return False
        return True

    def _swept(self, table: TableName, edge: Edge) -> bool:
        shortcut = self.shortcuts.get(table)
        return shortcut is not None and edge.fk in shortcut.sweep and edge.fk not in self._wide

    def _walk_direct(self, table: TableName, where: ColumnElement[bool], ordered: bool) -> bool:
        """Remove the rows of ``table`` matching ``where`` batch by batch, each batch in
        one transaction with the rows referencing it (``_Shortcut``). False when a batch
        met a reference it may not clear, or one too wide for a short transaction even
        for a single row: the caller goes on the general way."""
        loop = self._server_loop(table, where, leaf=False) if ordered else None
        if loop is not None:
            return self._walk_in_server(table, loop)
        target = self._t(table)
        rid = self.rid[table]
        shortcut = self.shortcuts[table]
        keys = rid.select_columns(target) if ordered else []
        last: tuple[Any, ...] | None = None
        while True:
            n = self._batch.get(table, self.opts.batch_size)
            cond = where if last is None else sa.and_(where, rid.after(target, last))
            sub = sa.select(row_address()).select_from(target).where(cond).limit(n)
            if ordered:
                sub = sub.order_by(*rid.order_by(target))
            chosen = addressed_by(sub)
            stmt = sa.delete(target).where(chosen)
            try:
                with self._transaction(checks_off=True):
                    gone = self._delete(stmt, target, shortcut.referenced, None, keys, rid.sort_key)
                    self._record(table, self.plan.actions[table], gone.count)
                    self._txn_rows = self._txn_top = gone.count
                    self._references_gone(shortcut, gone)
            except _StillReferenced:
                return False
            except _Overflow as over:
                if n > 1:
                    self._shrink_batch(table, n, self._txn_top, self._txn_rows)
                    continue
                if over.widest is not None:
                    self._wide.add(over.widest)
                return False
            if gone.count:
                self.checked.add(table)
            if gone.count < n:
                return True
            if ordered:
                last = gone.last

    # --- batches run in the server ------------------------------------------------------

    def _server_loop(
        self, table: TableName, where: ColumnElement[bool], leaf: bool
    ) -> _Loop | None:
        """The server-side loop for an ordered walk of ``table``, or None when it goes
        the client's way (see ``worker.serverloop`` for what the loop covers)."""
        if not self._loop_possible() or self.plan.actions[table] not in _LOOP_ACTIONS:
            return None
        rid = self.rid[table]
        info = self.plan.info(table)
        if rid.kind != "key" or len(rid.columns) != 1 or info.partitioned or info.rules:
            return None
        dialect = self.conn.dialect
        if loop_type(self._t(table).c[rid.columns[0]].type, dialect) is None:
            return None
        slots: list[tuple[TableName, TableAction]] = []
        try:
            if leaf:
                root = Node(self._t(table))
            else:
                root = self._loop_node(table, self.shortcuts[table], slots)
            slot = self._slot(slots, table, self.plan.actions[table])
            spec = LoopSpec(
                root=root,
                key=rid.columns[0],
                where=where,
                slot=slot,
                slots=len(slots),
                checks_off=not leaf,
                lock_timeout_ms=self.opts.lock_timeout_ms,
                fast_commit=self.opts.fast_commit,
                compression=self.compression.setting,
                budget=self.opts.batch_size * _TXN_ROWS_FACTOR,
            )
            return _Loop(ServerLoop(spec, dialect, driver_literals(self.conn)), slots, leaf)
        except Exception:
            # (A value the driver cannot write as a literal, a type without a loop
            # variable, a construct the loop does not carry: the client's way does.)
            return None

    def _loop_possible(self) -> bool:
        if self._loop_ok is None:
            dialect = self.conn.dialect
            version = dialect.server_version_info or (0,)
            # A column, table or schema named like one of the loop's variables would be
            # ambiguous with it (a table's name is also a whole-row reference).
            names = [
                *(c.name for info in self.plan.catalog.tables.values() for c in info.table.columns),
                *(t.name for t in self.plan.catalog.tables),
                *(t.schema for t in self.plan.catalog.tables),
            ]
            self._loop_ok = (
                self.dialect == POSTGRESQL
                and dialect.driver == "psycopg2"
                and tuple(version) >= MIN_SERVER_VERSION
                and not any(name.lower().startswith(PREFIX) for name in names)
            )
            if self._loop_ok and not self.conn.in_transaction():
                # A call is one statement of many batches: under a statement timeout
                # it must stay well inside it, and a short one leaves the client's way.
                with self.conn.begin():
                    limit = self.conn.execute(
                        sa.text("SELECT setting::bigint FROM pg_settings WHERE name = :n"),
                        {"n": "statement_timeout"},
                    ).scalar_one()
                self._loop_seconds = _LOOP_SECONDS
                if limit:
                    self._loop_seconds = min(_LOOP_SECONDS, limit / 1000.0 / 10)
                    self._loop_ok = limit >= _LOOP_MIN_STATEMENT_TIMEOUT_MS
        return self.opts.server_batches and self._loop_ok and not self.conn.in_transaction()

    @staticmethod
    def _slot(
        slots: list[tuple[TableName, TableAction]], table: TableName, action: TableAction
    ) -> int:
        if (table, action) not in slots:
            slots.append((table, action))
        return slots.index((table, action))

    def _loop_node(
        self, table: TableName, shortcut: _Shortcut, slots: list[tuple[TableName, TableAction]]
    ) -> Node:
        def reference(fk: ForeignKey) -> Reference:
            if len(fk.child_columns) != 1 or fk in self._wide:
                raise _NoLoop()
            child = self._t(fk.child)
            for t, c in ((child, fk.child_columns[0]), (self._t(table), fk.parent_columns[0])):
                if loop_type(t.c[c].type, self.conn.dialect) is None:
                    raise _NoLoop()
            return Reference(child, fk.child_columns[0], fk.parent_columns[0])

        sweeps = []
        for fk in shortcut.sweep:
            ref = reference(fk)
            guard = self.preds.guard(fk.child, ref.child)
            sweeps.append(
                Sweep(
                    ref,
                    self._loop_node(fk.child, self.shortcuts[fk.child], slots),
                    self._slot(slots, fk.child, self.plan.actions[fk.child]),
                    None if guard is None else sa.not_(guard),
                )
            )
        clears = tuple(
            (reference(fk), self._slot(slots, fk.child, TableAction.NULLIFY))
            for fk in shortcut.clear
        )
        probes = tuple(reference(fk) for fk in shortcut.probe)
        return Node(self._t(table), tuple(shortcut.referenced), tuple(sweeps), clears, probes)

    def _walk_in_server(self, table: TableName, loop: _Loop) -> bool:
        """Remove the rows of an ordered walk with the server-side loop, a call at a
        time. False when it gave a batch back that the client's general way must take
        (as ``_walk_direct``); the batches before it are committed and counted."""
        last: Any = None
        shortcut = self.shortcuts.get(table)
        while True:
            n = self._batch.get(table, self.opts.batch_size)
            seconds = min(_LOOP_SECONDS, self._loop_seconds)
            if self.opts.deadline is not None:
                seconds = max(0.0, min(seconds, self.opts.deadline - time.monotonic()))
            run, error = loop.server.run(self.conn, n, last, seconds)
            self._pending.clear()
            for (t, action), count in zip(loop.slots, run.counts, strict=True):
                self._record(t, action, count)
                if count:
                    self.in_server.add(t)
            if not loop.leaf and run.counts[loop.server.spec.slot]:
                self.checked.add(table)
            self._committed(run.longest_seconds, deadline=error is None)
            if error is not None:
                raise error
            if run.batches:
                last = run.last
            if run.gave_back == REFERENCED:
                return False
            if run.gave_back == OVERFLOW:
                if n > 1:
                    self._shrink_batch(table, n, run.top, run.rows)
                    continue
                if shortcut is not None and run.swept:
                    widest = max(range(len(run.swept)), key=run.swept.__getitem__)
                    self._wide.add(shortcut.sweep[widest])
                return False
            if run.done:
                return True

    def _shrink_batch(self, table: TableName, n: int, top: int, total: int) -> None:
        """A batch of ``n`` rows of ``table`` (``top``) swept ``total`` rows along, past
        the transaction budget: aim the next at 3/4 of it (at least halving)."""
        budget = self.opts.batch_size * _TXN_ROWS_FACTOR
        self._batch[table] = max(1, min(n // 2, int(0.75 * top * budget / max(total, 1))))

    def _delete(
        self,
        stmt: sa.Delete | sa.Update,
        target: sa.Table,
        referenced: Sequence[str],
        foreign: ColumnElement[bool] | None,
        keys: Sequence[ColumnElement[Any]] = (),
        sort_key: Callable[[tuple[Any, ...]], Any] = tuple,
    ) -> _Gone:
        """Run ``stmt`` and bring back what the sweeps need: the count, the removed rows'
        ``referenced`` columns, whether any row matched ``foreign``, and the greatest of
        ``keys``. Where the types allow it, PostgreSQL aggregates them into one row of
        arrays, which the driver decodes in C (a row per removed row costs the walk
        about a fifth of its time)."""
        cols = [target.c[c] for c in referenced]
        flag = [] if foreign is None else [foreign.label("foreign")]
        # (The greatest of several key columns is not each column's greatest.)
        simple = len(keys) <= 1 and all(_arrayable(c.type) for c in [*cols, *keys])
        if simple and (cols or keys or flag):
            row = self.conn.execute(aggregated(stmt, cols, keys, foreign)).one()
            count = int(row[0])
            values = {c: list(row[1 + i] or []) for i, c in enumerate(referenced)}
            at = 1 + len(cols)
            last = tuple(row[at : at + len(keys)]) if keys else None
            return _Gone(count, values, bool(flag and row[-1]), last)
        if not (cols or keys or flag):
            return _Gone(int(self.conn.execute(stmt).rowcount), {}, False, None)
        raw = self.conn.execute(stmt.returning(*cols, *keys, *flag)).all()
        values = {c: [r[i] for r in raw] for i, c in enumerate(referenced)}
        k = len(cols)
        last = None
        if keys and raw:
            last = max((tuple(r[k : k + len(keys)]) for r in raw), key=sort_key)
        return _Gone(len(raw), values, bool(flag and any(r[-1] for r in raw)), last)

    def _remove_checked(self, table: TableName, rows: list[_Row], shortcut: _Shortcut) -> None:
        """Remove a batch with the database's reference triggers off and check the
        references into it set-wise instead (see ``_Shortcut``)."""
        target = self._t(table)
        rid = self.rid[table]
        where = rid.matches(target, [r.rid for r in rows], self.dialect)
        guard = self.preds.guard(table, target)
        if guard is not None:
            where = sa.and_(where, guard)
        gone = self._delete(sa.delete(target).where(where), target, shortcut.referenced, None)
        self._record(table, self.plan.actions[table], gone.count)
        self._txn_rows = gone.count
        self._references_gone(shortcut, gone)

    def _references_gone(
        self, shortcut: _Shortcut, gone: _Gone, top: ForeignKey | None = None
    ) -> None:
        """Inside the transaction that removed ``gone``, with the reference triggers
        off: sweep (recursively), clear and probe every reference into those rows.
        Raises ``_Overflow`` past the transaction's row budget, naming the reference
        of the batch's own table that swept the most rows (``top``)."""
        if not gone.count:
            return
        n = self.opts.batch_size
        budget = n * _TXN_ROWS_FACTOR

        def chunks(fk: ForeignKey) -> Iterator[ColumnElement[bool]]:
            child = self._t(fk.child)
            cols = [child.c[c] for c in fk.child_columns]
            if len(cols) == 1:
                flat = sorted({v for v in gone.columns[fk.parent_columns[0]] if v is not None})
                for i in range(0, len(flat), n):
                    yield cols[0] == sa.any_(pg_array(flat[i : i + n], cols[0].type))
                return
            rows = zip(*(gone.columns[c] for c in fk.parent_columns), strict=True)
            refs = _sorted_keys({key for key in rows if None not in key})
            for chunk in _chunks(refs, n):
                yield key_in(cols, chunk, self.dialect)

        for fk in shortcut.sweep:
            if fk in self._wide:
                self._probe_all(fk, chunks(fk))
                continue
            child = self._t(fk.child)
            child_guard = self.preds.guard(fk.child, child)
            inner = self.shortcuts[fk.child]
            # A referencing row of another subject (its subject column says so) is
            # removed too, but seen: the transaction is rolled back and the batch goes
            # the database's way, which reports it. One statement instead of a second
            # look-up of the same keys.
            foreign = None if child_guard is None else sa.not_(child_guard)
            for refs in chunks(fk):
                room = budget - self._txn_rows
                sub = sa.select(row_address()).select_from(child).where(refs).limit(room + 1)
                chosen = addressed_by(sub)
                swept = self._delete(
                    sa.delete(child).where(chosen), child, inner.referenced, foreign
                )
                if swept.foreign:
                    raise _StillReferenced()
                self._txn_rows += swept.count
                through = top or fk
                self._txn_swept[through] = self._txn_swept.get(through, 0) + swept.count
                if swept.count > room:
                    raise _Overflow(max(self._txn_swept, key=self._txn_swept.__getitem__))
                self._record(fk.child, self.plan.actions[fk.child], swept.count)
                self._references_gone(inner, swept, through)
        for fk in shortcut.clear:
            child = self._t(fk.child)
            for refs in chunks(fk):
                nulled = sa.update(child).where(refs).values(dict.fromkeys(fk.child_columns))
                count = int(self.conn.execute(nulled).rowcount)
                self._record(fk.child, TableAction.NULLIFY, count)
        for fk in shortcut.probe:
            self._probe_all(fk, chunks(fk))

    def _probe_all(self, fk: ForeignKey, refs: Iterable[ColumnElement[bool]]) -> None:
        child = self._t(fk.child)
        for cond in refs:
            self._probe(child, cond)

    def _probe(self, child: sa.Table, refs: ColumnElement[bool]) -> None:
        found = self.conn.execute(sa.select(sa.literal(1)).select_from(child).where(refs).limit(1))
        if found.first() is not None:
            raise _StillReferenced()

    def _remove_rows(self, conn: Connection, table: TableName, rows: list[_Row]) -> None:
        """Remove a batch whose references were cleared; the statement takes the row
        locks, rows gone meanwhile are skipped, and a row that moved to another subject
        is left alone."""
        self._apply(table, rows, self.preds.guard(table, self._t(table)))

    def _apply(
        self, table: TableName, rows: list[_Row], guard: ColumnElement[bool] | None = None
    ) -> None:
        target = self._t(table)
        rid = self.rid[table]
        action = self.plan.actions[table]

        def where(batch: list[_Row]) -> ColumnElement[bool]:
            keys = rid.matches(target, [r.rid for r in batch], self.dialect)
            return keys if guard is None else sa.and_(keys, guard)

        if action is TableAction.ANONYMIZE:
            pol = self.plan.policies[table]
            stmt = sa.update(target).where(where(rows)).values(dict(pol.set))
            self._record(table, action, self.conn.execute(stmt).rowcount)
            return
        count = 0
        for level in self._levels(table, rows):
            plain, self_pointing = self._split_self_pointing(table, level)
            if plain:
                count += self.conn.execute(sa.delete(target).where(where(plain))).rowcount
            if self_pointing:
                count += self._delete_self_pointing(table, self_pointing)
        self._record(table, action, count)

    def _split_self_pointing(
        self, table: TableName, rows: list[_Row]
    ) -> tuple[list[_Row], list[_Row]]:
        """On MySQL, rows whose NOT NULL self-reference points at themselves (tree roots)
        cannot be deleted while foreign-key checks are on; set them apart."""
        fks = [
            fk
            for fk in self.plan.info(table).foreign_keys
            if fk.is_self_reference and self.dialect == MYSQL
        ]
        if not fks:
            return rows, []
        plain: list[_Row] = []
        pointing: list[_Row] = []
        for row in rows:
            own = any(
                all(
                    row.values[c] == row.values[p]
                    for c, p in zip(fk.child_columns, fk.parent_columns, strict=True)
                )
                for fk in fks
            )
            (pointing if own else plain).append(row)
        return plain, pointing

    def _delete_self_pointing(self, table: TableName, rows: list[_Row]) -> int:
        """Delete self-pointing rows with MySQL's checks off for one statement, after
        proving (under the batch's row locks) that nothing else references them."""
        target = self._t(table)
        rid = self.rid[table]
        ids = [r.rid for r in rows]
        lock = sa.select(*rid.select_columns(target)).where(rid.matches(target, ids, self.dialect))
        self.conn.execute(lock.with_for_update()).all()
        for fk in self.plan.catalog.incoming(table):
            child = self._t(fk.child).alias()
            refs = _sorted_keys({tuple(r.values[c] for c in fk.parent_columns) for r in rows})
            where = key_in([child.c[c] for c in fk.child_columns], refs, self.dialect)
            if fk.is_self_reference:
                own = key_in([child.c[c] for c in self.rid[table].columns], ids, self.dialect)
                where = sa.and_(where, sa.not_(own))
            found = self.conn.execute(
                sa.select(sa.func.count()).select_from(child).where(where)
            ).scalar_one()
            if found:
                raise UnsatisfiablePlan(
                    [str(fk.child), str(table)], "rows still reference a tree root"
                )
        self.conn.execute(sa.text("SET SESSION foreign_key_checks = 0"))
        try:
            delete = sa.delete(target).where(rid.matches(target, ids, self.dialect))
            return int(self.conn.execute(delete).rowcount)
        finally:
            self.conn.execute(sa.text("SET SESSION foreign_key_checks = 1"))

    def _levels(self, table: TableName, rows: list[_Row]) -> Iterable[list[_Row]]:
        """A batch of a self-referencing table goes leaves first on MySQL, which checks
        foreign keys row by row, and on SQLite, whose ON DELETE CASCADE would remove a
        child mid-statement without counting it; PostgreSQL checks at statement end."""
        self_fks = [
            e.fk
            for e in self.plan.children.get(table, [])
            if e.mode is EdgeMode.DELETE and e.fk.is_self_reference
        ]
        if self.dialect not in (MYSQL, SQLITE) or not self_fks:
            yield rows
            return
        remaining = list(rows)
        while remaining:
            referenced: set[tuple[Any, ...]] = set()
            for fk in self_fks:
                for r in remaining:
                    ref = tuple(r.values[c] for c in fk.child_columns)
                    own = tuple(r.values[c] for c in fk.parent_columns)
                    if None not in ref and ref != own:
                        referenced.add((fk.name, *ref))
            level = [
                r
                for r in remaining
                if not any(
                    (fk.name, *(r.values[c] for c in fk.parent_columns)) in referenced
                    for fk in self_fks
                )
            ]
            if not level:
                raise UnsatisfiablePlan([str(table), str(table)], "rows reference each other")
            yield level
            chosen = {id(r) for r in level}
            remaining = [r for r in remaining if id(r) not in chosen]

    # --- bookkeeping --------------------------------------------------------------------

    @contextmanager
    def _transaction(self, checks_off: bool = False) -> Iterator[Connection]:
        """One short transaction; its counts (and progress) are kept only once it commits."""
        self._pending.clear()
        self._txn_rows = 0
        self._txn_swept.clear()
        with self.conn.begin():
            begin_batch(
                self.conn,
                self.dialect,
                self.opts.lock_timeout_ms,
                self.opts.fast_commit,
                checks_off,
                self.compression.setting,
            )
            yield self.conn
        self._committed()

    def _committed(self, server_seconds: float = 0.0, deadline: bool = True) -> None:
        """Keep the counts of what was just committed, report progress, and end the
        slice past the deadline."""
        for (table, action), rows in self._pending.items():
            key = (table, action)
            self.counts[key] = self.counts.get(key, 0) + rows
            if self.progress is not None:
                self.progress(
                    Progress(
                        table=str(table),
                        action=action,
                        rows=rows,
                        total_rows=sum(c for (_, a), c in self.counts.items() if a in REMOVING),
                        elapsed_seconds=time.monotonic() - self.started,
                        rows_by_table={f"{t}:{a}": c for (t, a), c in self.counts.items()},
                        server_batch_seconds=server_seconds,
                    )
                )
        removed = bool(self._pending)
        self._pending.clear()
        # A slice ends only after a batch that changed rows: ending after an empty one
        # could leave every later slice re-checking the same empty start of the walk.
        ended = self.opts.deadline is not None and time.monotonic() >= self.opts.deadline
        if removed and deadline and ended:
            flush_commits(self.conn, self.dialect)
            raise SliceEnded(self.outcomes())

    def _record(self, table: TableName, action: TableAction, rows: int) -> None:
        if rows > 0:
            self._pending[(table, action)] = self._pending.get((table, action), 0) + rows


def _chunks(items: Sequence[tuple[Any, ...]], size: int) -> Iterator[Sequence[tuple[Any, ...]]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _sorted_keys(values: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Keys in their natural order (so concurrent erasures lock rows in the same order)."""
    items = list(values)
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=repr)
