"""A multi-table cycle's member rows found level by level, for databases on which an
unrolled membership statement is unsafe (MariaDB copies a CTE into every part of the
statement that reads it, so a cycle with two paths round it grows the statement
exponentially with its depth, and it takes no more than 64 CTEs to a statement).

Level 0 is the rows of the cycle's tables that belong to the subject without going
round it (their own column, or a table outside the cycle). Each further level looks up
the rows that reference the previous level's new rows through the cycle's references,
by key, ``CHUNK`` keys at a time, until a level finds nothing new. The rows found past
level 0 (usually few: those without the subject's own column) are then named by key in
the statements that need the cycle's members, next to level 0's predicate: every
statement's size is set by the schema and those keys, whatever the depth of the data.
Past ``MAX_FOLLOWED`` rows followed, ``MAX_KEYS`` rows past level 0 or ``MAX_LEVELS``
levels, the plan is refused before anything is written. Why:
docs/design/engine-notes.md, "Cycles deeper than the predicates unroll".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from worker.catalog.model import TableName
from worker.exceptions import UnsatisfiablePlan
from worker.execution.keys import chunks, sorted_keys
from worker.planning.model import Cycle, Plan
from worker.planning.predicates import Predicates

#: Keys in one look-up's list.
CHUNK = 500
#: Rows of one cycle followed (held in memory while the levels are walked).
MAX_FOLLOWED = 1_000_000
#: Rows of one cycle past level 0 (they are named by key in later statements).
MAX_KEYS = 20_000
#: Levels (references followed one after the other) before the plan is refused.
MAX_LEVELS = 1_000

Rows = dict[TableName, dict[tuple[Any, ...], tuple[Any, ...]]]


def cycle_members(conn: Connection, plan: Plan, preds: Predicates) -> Predicates:
    """``preds`` with the member keys of every multi-table cycle's tables known, the
    cycles taken parents first (a cycle's level 0 may need another's members)."""
    known = Predicates(plan, preds.subject, preds.parametric, preds.unroll)
    for cycle in _cycles_parents_first(plan):
        for table, found in _members(conn, known, cycle).items():
            known.known[table] = sorted_keys(found)
        # (A new one each time: CTEs are cached, some built before these keys.)
        known = Predicates(plan, preds.subject, preds.parametric, preds.unroll, known.known)
    return known


def _cycles_parents_first(plan: Plan) -> list[Cycle]:
    seen: dict[int, Cycle] = {}
    for table in reversed(plan.order):
        cycle = plan.cycle_of.get(table)
        if cycle is not None and len(cycle.tables) > 1:
            seen.setdefault(id(cycle), cycle)
    return list(seen.values())


def _members(conn: Connection, preds: Predicates, cycle: Cycle) -> Rows:
    """The keys of the cycle's rows that belong to the subject past level 0."""
    plan = preds.plan
    for table in cycle.tables:
        if not plan.info(table).key_columns():
            raise UnsatisfiablePlan(
                [str(t) for t in cycle.tables], f"{table} has no key to follow its rows by"
            )
    rows: Rows = {t: {} for t in cycle.tables}
    fresh: Rows = {}
    for table in cycle.tables:
        target = plan.info(table).table
        fresh[table] = _read(conn, preds, table, preds.outside_cycle(table, target))
    past_zero: Rows = {t: {} for t in cycle.tables}
    level = 0
    while any(fresh.values()):
        for table, found in fresh.items():
            rows[table].update(found)
            if level:
                past_zero[table].update(found)
        if sum(len(r) for r in rows.values()) > MAX_FOLLOWED:
            raise _refused(cycle, f"the subject has more than {MAX_FOLLOWED} rows in it")
        if sum(len(r) for r in past_zero.values()) > MAX_KEYS:
            raise _refused(cycle, f"more than {MAX_KEYS} rows belong to it by reference only")
        level += 1
        if level > MAX_LEVELS:
            raise _refused(cycle, f"its rows reference each other more than {MAX_LEVELS} deep")
        fresh = _next_level(conn, preds, cycle, fresh, rows)
    return past_zero


def _next_level(conn: Connection, preds: Predicates, cycle: Cycle, fresh: Rows, rows: Rows) -> Rows:
    """Rows referencing the last level's new rows through the cycle, not yet known."""
    plan = preds.plan
    found: Rows = {t: {} for t in cycle.tables}
    for child in cycle.tables:
        target = plan.info(child).table
        columns = preds.cte_columns(child)
        for fk in preds.in_cycle_edges(child):
            index = [preds.cte_columns(fk.parent).index(c) for c in fk.parent_columns]
            values = {tuple(row[i] for i in index) for row in fresh.get(fk.parent, {}).values()}
            values = {v for v in values if None not in v}
            for chunk in chunks(sorted_keys(values), CHUNK):
                where = plan.dialect.key_in([target.c[c] for c in fk.child_columns], chunk)
                guard = preds.guard(child, target)
                if guard is not None:
                    where = sa.and_(where, guard)
                for key, row in _read(conn, preds, child, where, columns).items():
                    if key not in rows[child]:
                        found[child][key] = row
    return found


def _read(
    conn: Connection,
    preds: Predicates,
    table: TableName,
    where: sa.ColumnElement[bool],
    columns: Iterable[str] | None = None,
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Rows of ``table`` matching ``where``: key -> the member CTE's columns, read as
    the driver gives them (they are sent back)."""
    plan = preds.plan
    info = plan.info(table)
    target = info.table
    cols = list(columns or preds.cte_columns(table))
    width = len(info.key_columns() or ())
    stmt = sa.select(*[plan.dialect.driver_value(target.c[c]) for c in cols]).where(where)
    return {tuple(r[:width]): tuple(r) for r in conn.execute(stmt)}


def _refused(cycle: Cycle, why: str) -> UnsatisfiablePlan:
    return UnsatisfiablePlan(
        [str(t) for t in cycle.tables], f"too large to follow before writing: {why}"
    )
