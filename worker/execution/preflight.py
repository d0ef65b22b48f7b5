"""Before any write: follow every cycle as deep as the subject's rows go, and refuse
when kept rows, another subject's rows, or rows in an unread schema would be hit."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from models.erasure import TableAction
from worker.catalog.model import SET_DEFAULT, SET_NULL, ForeignKey, TableName
from worker.exceptions import (
    CrossSubjectReference,
    KeptRowsBlock,
    PolicyConflict,
    UnsatisfiablePlan,
    UnsupportedTable,
)
from worker.execution.cycle_members import cycle_members
from worker.execution.self_references import loops_deferrable
from worker.planning.model import REMOVING, Cycle, EdgeMode, Plan
from worker.planning.predicates import MAX_UNROLL, Predicates, key_in_select

#: How long one of the pre-flight checks' statements may run before the server stops
#: it (MariaDB, MySQL: for the checks; PostgreSQL: for the rest of their transaction,
#: the dry run's counts included).
READ_SECONDS = 300


def count(conn: Connection, plan: Plan, table: TableName, where: ColumnElement[bool]) -> int:
    """Rows of ``table`` matching ``where``."""
    target = plan.info(table).table
    return int(
        conn.execute(sa.select(sa.func.count()).select_from(target).where(where)).scalar_one()
    )


def deep_enough(conn: Connection, plan: Plan, preds: Predicates) -> Predicates:
    """Predicates that follow every multi-table cycle as far as the subject's rows go,
    for the dry run's counts and the pre-flight checks: the unrolling doubles until one
    more time round finds nothing more, and past ``MAX_UNROLL`` (or the database's
    nesting limit) the plan is refused (``UnsatisfiablePlan``). Run it, and the
    statements built from what it returns, inside ``deep_statements()``. Why:
    docs/design/engine-notes.md, "Cycles deeper than the predicates unroll"."""
    cycles = list({id(c): c for c in plan.cycle_of.values() if len(c.tables) > 1}.values())
    if not cycles:
        return preds
    if not plan.dialect.unrolls_cycles:
        return _followed_by_key(conn, plan, preds)
    return _unrolled_deep_enough(conn, plan, preds, cycles)


def _unrolled_deep_enough(
    conn: Connection, plan: Plan, preds: Predicates, cycles: list[Cycle]
) -> Predicates:
    tables = sorted({t for c in cycles for t in c.tables})

    def counts(p: Predicates) -> list[int]:
        return [count(conn, plan, t, p.member(t)) for t in tables]

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


def _followed_by_key(conn: Connection, plan: Plan, preds: Predicates) -> Predicates:
    """The cycles' members found level by level; ``preds`` takes their keys too (the
    walk's own look-ups and verification use them)."""
    with plan.dialect.bounded_reads(conn, READ_SECONDS):
        found = cycle_members(conn, plan, preds)
    preds.know(found.known)
    return found


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
    """Refuse when a foreign key declared in a schema the catalog did not read
    (``--schema``) would have the database cascade, clear or reset rows there as this
    subject's rows go: rows nobody checked, which may be another subject's. (One that
    only refuses, NO ACTION or RESTRICT, is the database's to enforce.)"""
    read = {t.schema for t in plan.catalog.tables}
    removed = {(t.schema, t.name) for t, a in plan.actions.items() if a in REMOVING}
    for schema, table, constraint, other in plan.dialect.unread_cascades(conn, sorted(read)):
        if (schema, table) in removed:
            raise UnsupportedTable(
                f"{schema}.{table}",
                f"foreign key {constraint} in schema {other}, which was not read, would"
                " change rows there that nobody checked; read that schema too",
            )


def preflight(conn: Connection, plan: Plan, preds: Predicates) -> None:
    """Refuse, before any write, when kept rows or another subject's rows would be hit."""
    with plan.dialect.bounded_reads(conn, READ_SECONDS):
        _preflight(conn, plan, preds)


def _preflight(conn: Connection, plan: Plan, preds: Predicates) -> None:
    _unread_actions(conn, plan)
    _self_reference_loops(conn, plan, preds)
    _placeholders(conn, plan, preds)
    for parent, action in sorted(plan.actions.items()):
        if action not in REMOVING:
            continue
        for fk in sorted(plan.catalog.incoming(parent), key=lambda f: (f.child, f.child_columns)):
            if fk.on_delete in (SET_NULL, SET_DEFAULT) or fk.child in plan.reassigned:
                continue
            child_action = plan.actions.get(fk.child)
            child = plan.info(fk.child).table
            refs = _refs_member(child, fk, preds)
            if child_action is None or child_action is TableAction.KEEP:
                rows = count(conn, plan, fk.child, refs)
                if rows:
                    raise KeptRowsBlock(str(fk.child), _constraint(fk), rows)
            elif child_action is not TableAction.DELETE_IF_ORPHANED:
                guard = preds.guard(fk.child, child)
                if guard is not None:
                    rows = count(conn, plan, fk.child, sa.and_(refs, sa.not_(guard)))
                    if rows:
                        raise CrossSubjectReference(str(fk.child), _constraint(fk), rows)


def _placeholders(conn: Connection, plan: Plan, preds: Predicates) -> None:
    """Refuse a ``reassign`` policy whose placeholder row is not there, or is one of
    the subject's rows being removed."""
    for table in plan.reassigned:
        value = plan.placeholder(table)
        for parent, edges in sorted(plan.children.items()):
            moved = [e.fk for e in edges if e.fk.child == table and e.mode is EdgeMode.REASSIGN]
            for column in sorted({fk.parent_columns for fk in moved}):
                target = plan.info(parent).table
                (name,) = column
                where = target.c[name] == sa.literal(value, target.c[name].type)
                place = f"placeholder {parent}({name}) = {value!r}"
                if not count(conn, plan, parent, where):
                    raise PolicyConflict(str(table), f"the {place} does not exist")
                if count(conn, plan, parent, sa.and_(where, preds.member(parent, target))):
                    raise PolicyConflict(str(table), f"the {place} is the subject's own")


def _self_reference_loops(conn: Connection, plan: Plan, preds: Predicates) -> None:
    """Refuse where the subject's rows of a self-referencing table reference each other
    round a NOT NULL self-reference (``a.up = b``, ``b.up = a``) on a database that
    removes such rows leaves first and cannot defer the check (MySQL): the walk would
    meet the loop after other batches had committed. (Loops that mix several NOT NULL
    self-references are still refused when the walk meets them.)"""
    if not plan.dialect.self_references_leaves_first:
        return
    for table, action in sorted(plan.actions.items()):
        fks = [
            e.fk
            for e in plan.children.get(table, [])
            if e.mode is EdgeMode.DELETE and e.fk.is_self_reference
        ]
        if action not in REMOVING or loops_deferrable(plan.dialect, fks):
            continue
        for fk in fks:
            if not fk.nullable and _rows_in_loops(conn, plan, preds, fk):
                raise UnsatisfiablePlan(
                    [str(table), str(table)],
                    f"the subject's rows reference each other round {_constraint(fk)},"
                    " which is NOT NULL and which this database cannot defer",
                )


def _rows_in_loops(conn: Connection, plan: Plan, preds: Predicates, fk: ForeignKey) -> bool:
    """Whether some of the subject's rows of ``fk``'s table are not reached from the
    roots of the tree ``fk`` draws (rows pointing at themselves or outside the
    subject's rows): those go round a loop, or hang below one. One statement."""
    table = plan.info(fk.child).table
    key = list(plan.info(fk.child).key_columns() or ())
    cols = list(dict.fromkeys([*key, *fk.child_columns, *fk.parent_columns]))
    alias = table.alias()
    rows = sa.select(*[alias.c[c] for c in cols]).where(preds.member(fk.child, alias))
    members = rows.cte("loop_members")
    pairs = list(zip(fk.child_columns, fk.parent_columns, strict=True))

    def points_at_itself(r: sa.FromClause) -> ColumnElement[bool]:
        return sa.and_(*[r.c[c] == r.c[p] for c, p in pairs])

    other = members.alias()
    parent_member = sa.exists(
        sa.select(sa.literal(1))
        .select_from(other)
        .where(*[other.c[p] == members.c[c] for c, p in pairs])
    )
    roots = sa.select(*[members.c[c] for c in cols]).where(
        sa.or_(points_at_itself(members), sa.not_(parent_member))
    )
    reached = roots.cte("reached_from_roots", recursive=True)
    step = members.alias()
    down = sa.select(*[step.c[c] for c in cols]).join_from(
        step, reached, sa.and_(*[step.c[c] == reached.c[p] for c, p in pairs])
    )
    reached = reached.union(down)
    stmt = sa.select(
        sa.select(sa.func.count()).select_from(members).scalar_subquery(),
        sa.select(sa.func.count()).select_from(reached).scalar_subquery(),
    )
    total, found = conn.execute(stmt).one()
    return bool(total != found)


def _refs_member(child: sa.Table, fk: ForeignKey, preds: Predicates) -> ColumnElement[bool]:
    members = preds.member_cte(fk.parent)
    sub = sa.select(*[members.c[c] for c in fk.parent_columns])
    return key_in_select([child.c[c] for c in fk.child_columns], sub)


def _constraint(fk: ForeignKey) -> str:
    return fk.name or fk.describe()
