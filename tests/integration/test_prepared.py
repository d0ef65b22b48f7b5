"""``worker.prepared.Prepared`` on a real PostgreSQL: typed parameters, values
converted by the running dialect, a connection whose backend lost (or already has)
the prepared statement, as behind a pooler in transaction mode, errors, and the quick
check of ``worker.service.nothing_here`` built on it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from models.registry import Service
from tests.conftest import TargetDB
from worker.catalog.reflection import reflect
from worker.execution.verification import NothingCheck
from worker.planning.building import build_plan
from worker.prepared import Prepared
from worker.service import PlanCache, nothing_here

md = sa.MetaData()
things = sa.Table(
    "things",
    md,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(40), nullable=False),
    sa.Column("doc", sa.JSON),
    sa.Column("at", sa.DateTime(timezone=True)),
)


def _statement() -> sa.Select[Any]:
    name = sa.bindparam("p_name", type_=sa.String(40))
    return (
        sa.select(things.c.id, things.c.doc, things.c.at)
        .where(things.c.name == name, things.c.id > sa.literal(0, sa.Integer))
        .order_by(things.c.id)
    )


def _rows(db: TargetDB, prepared: Prepared, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    with db.engine.connect() as plain:
        conn = plain.execution_options(isolation_level="AUTOCOMMIT")
        return [tuple(r) for r in prepared.run(conn, params)]


def _backend_statements(db: TargetDB) -> list[str]:
    """The prepared statements of the pooled connection (the pool holds one here)."""
    with db.engine.connect() as conn:
        return list(conn.exec_driver_sql("SELECT name FROM pg_prepared_statements").scalars())


def test_parameters_are_typed_and_converted(pg: TargetDB) -> None:
    md.create_all(pg.engine)
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with pg.engine.begin() as conn:
        conn.execute(
            sa.insert(things),
            [
                {"id": 1, "name": "it's", "doc": {"a": [1, "x"]}, "at": at},
                {"id": 2, "name": "other", "doc": None, "at": None},
            ],
        )
    prepared = Prepared(_statement(), pg.engine.dialect)
    assert "things.name = $1::VARCHAR AND things.id > $2::INTEGER" in prepared.sql
    assert prepared.order == ["p_name", "param_1"]
    assert _rows(pg, prepared, {"p_name": "it's"}) == [(1, {"a": [1, "x"]}, at)]
    assert _rows(pg, prepared, {"p_name": "%s"}) == []
    assert prepared.name in _backend_statements(pg)

    # A JSON parameter goes through the dialect's serializer.
    update = (
        sa.update(things)
        .where(things.c.id == sa.bindparam("p_id", type_=sa.Integer))
        .values(doc=sa.bindparam("p_doc", type_=sa.JSON))
        .returning(things.c.doc)
    )
    changed = Prepared(update, pg.engine.dialect)
    assert _rows(pg, changed, {"p_id": 2, "p_doc": {"k": "v \\ \" '"}}) == [({"k": "v \\ \" '"},)]


def test_a_backend_without_the_statement_runs_it_unprepared(pg: TargetDB) -> None:
    md.create_all(pg.engine)
    with pg.engine.begin() as conn:
        conn.execute(sa.insert(things), [{"id": 7, "name": "n"}])
    prepared = Prepared(_statement(), pg.engine.dialect)
    assert _rows(pg, prepared, {"p_name": "n"}) == [(7, None, None)]
    # The backend forgets it (another backend behind a pooler, or DISCARD ALL) while the
    # pooled connection still believes it prepared: this run goes unprepared...
    for miss in range(1, 4):
        with pg.engine.connect() as conn:
            conn.exec_driver_sql("DEALLOCATE ALL")
            conn.commit()
        assert _rows(pg, prepared, {"p_name": "n"}) == [(7, None, None)]
        assert prepared.misses == miss
        assert prepared.name not in _backend_statements(pg)
        if miss < 3:
            # ... and the next one prepares it again.
            assert _rows(pg, prepared, {"p_name": "n"}) == [(7, None, None)]
            assert prepared.name in _backend_statements(pg)
    # After a few misses the pool is taken for one that loses them: always unprepared.
    assert _rows(pg, prepared, {"p_name": "n"}) == [(7, None, None)]
    assert prepared.name not in _backend_statements(pg)


def test_errors_are_sqlalchemy_errors_and_transactions_are_refused(pg: TargetDB) -> None:
    md.create_all(pg.engine)
    prepared = Prepared(_statement(), pg.engine.dialect)
    pg.run("DROP TABLE things")
    # The PREPARE fails (no such table): a DBAPIError, as an unprepared statement's,
    # which callers already handle (a kept plan is made again).
    with pytest.raises(sa.exc.ProgrammingError):
        _rows(pg, prepared, {"p_name": "x"})
    with pg.engine.connect() as conn, pytest.raises(RuntimeError):
        prepared.run(conn, {"p_name": "x"})


def test_statements_of_replaced_plans_are_deallocated(pg: TargetDB) -> None:
    md.create_all(pg.engine)
    statements = [
        Prepared(_statement().where(things.c.id != sa.literal_column(str(i))), pg.engine.dialect)
        for i in range(70)
    ]
    for prepared in statements:
        assert _rows(pg, prepared, {"p_name": "none"}) == []
    held = _backend_statements(pg)
    assert 0 < len(held) <= 64
    assert statements[-1].name in held
    assert statements[0].name not in held


def test_the_quick_check_takes_subjects_wider_than_the_column(pg: TargetDB) -> None:
    """A subject kind held as int in one service and bigint in another: a value beyond
    the int column's range is simply not there (it used to be compared untyped)."""
    pg.run(
        "CREATE TABLE t (id int PRIMARY KEY, tenant_id int NOT NULL)",
        "CREATE INDEX ON t (tenant_id)",
        "INSERT INTO t VALUES (1, 5)",
    )
    plan = build_plan(reflect(pg.engine), ["tenant_id"])
    check = NothingCheck(plan, None, pg.engine.dialect)
    for subject in ("3000000000", str(2**63), str(2**70), "-99999999999"):
        report, _ = check.run(pg.engine, subject)
        assert report is not None, subject
        assert report.verified
    assert check.run(pg.engine, "5")[0] is None


def test_a_kept_plan_outlived_by_its_schema_is_made_again(pg: TargetDB) -> None:
    """The table a kept plan checks is dropped and the pool is new (no connection has
    prepared the check): the failed PREPARE makes the plan again, as before."""
    pg.run(
        "CREATE TABLE customers (id int PRIMARY KEY, tenant_id int NOT NULL)",
        "CREATE TABLE orders (id int PRIMARY KEY, tenant_id int NOT NULL)",
    )
    service = Service(url_env="UNUSED")
    plans = PlanCache()
    args = (pg.engine, "shop", service, "tenant", ["tenant_id"])
    first = nothing_here(*args, "8", plans)
    assert first is not None
    assert {t.table for t in first.tables} == {"public.customers", "public.orders"}
    pg.run("DROP TABLE orders")
    pg.engine.dispose()
    again = nothing_here(*args, "8", plans)
    assert again is not None
    assert {t.table for t in again.tables} == {"public.customers"}


def test_a_backend_that_already_has_the_statement_uses_it(pg: TargetDB) -> None:
    md.create_all(pg.engine)
    with pg.engine.begin() as conn:
        conn.execute(sa.insert(things), [{"id": 3, "name": "m"}])
    prepared = Prepared(_statement(), pg.engine.dialect)
    assert _rows(pg, prepared, {"p_name": "m"}) == [(3, None, None)]
    # The connection forgets what it prepared (a new pool over the same backend would):
    # PREPARE meets the existing statement of the same name, which is the same SQL.
    with pg.engine.connect() as conn:
        conn.connection.info.clear()
    assert _rows(pg, prepared, {"p_name": "m"}) == [(3, None, None)]
    assert _backend_statements(pg).count(prepared.name) == 1
