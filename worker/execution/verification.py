"""The verification: whether any row of the subject remains, a few dozen ``EXISTS``
checks to a statement; and the quick check that a subject has nothing here at all."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from models.erasure import ErasureReport, TableAction
from worker.execution.report import outcomes, report
from worker.faults import database_failures
from worker.planning.model import Plan
from worker.planning.predicates import Predicates
from worker.prepared import Prepared

#: EXISTS checks per verification statement.
_CHECKS_PER_STATEMENT = 30


@database_failures
def nothing_to_erase(
    engine: Engine,
    plan: Plan,
    subject: object,
    version: ColumnElement[Any] | None = None,
    timeout_ms: int | None = None,
) -> tuple[ErasureReport | None, Any]:
    """The report of an erasure with nothing to do, or None when the subject has rows
    here: one read statement, outside any transaction, no lock. Most services hold
    nothing of a given subject. ``version`` (the schema's version token) is read in
    the same statement and returned with it, for the caller to check the plan.
    ``timeout_ms`` bounds each statement's lock wait and run time."""
    return NothingCheck(plan, version, engine.dialect).run(engine, subject, timeout_ms)


class NothingCheck:
    """``nothing_to_erase`` for one plan, built once and run for many subjects.

    The verification's ``EXISTS`` checks (and the schema's version token, when given)
    with the subject in parameters; on PostgreSQL each statement is prepared once per
    connection (``worker.prepared``)."""

    def __init__(self, plan: Plan, version: ColumnElement[Any] | None, dialect: sa.Dialect) -> None:
        self.plan = plan
        self.preds = Predicates(plan, None, parametric=True)
        self.with_version = version is not None
        self.statements = verification(plan, self.preds, version)
        self.prepared: list[Prepared] | None = None
        if plan.dialect.prepares_statements:
            self.prepared = [Prepared(stmt, dialect) for stmt in self.statements]

    def run(
        self, engine: Engine, subject: object, timeout_ms: int | None = None
    ) -> tuple[ErasureReport | None, Any]:
        started = time.monotonic()
        params = self.preds.bind_values(subject)
        left = 0
        value: Any = None
        with engine.connect() as plain:
            conn = plain.execution_options(isolation_level="AUTOCOMMIT")
            self.plan.dialect.bind_subject(conn, self.preds.session_values(subject))
            with self.plan.dialect.bounded_waits(conn, timeout_ms):
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
        return report(self.plan, outcomes(self.plan, {}), True, 0, started, []), value


def verification(
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
