"""``worker.prepared.Prepared`` on a real PostgreSQL: typed parameters, values
converted by the running dialect, and a connection whose backend lost (or already
has) the prepared statement, as behind a pooler in transaction mode."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from tests.conftest import TargetDB
from worker.prepared import Prepared

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


def test_a_backend_without_the_statement_gets_it_prepared_again(pg: TargetDB) -> None:
    md.create_all(pg.engine)
    with pg.engine.begin() as conn:
        conn.execute(sa.insert(things), [{"id": 7, "name": "n"}])
    prepared = Prepared(_statement(), pg.engine.dialect)
    assert _rows(pg, prepared, {"p_name": "n"}) == [(7, None, None)]
    # The backend forgets it (another backend behind a pooler, or DISCARD ALL) while the
    # pooled connection still believes it prepared.
    with pg.engine.connect() as conn:
        conn.exec_driver_sql("DEALLOCATE ALL")
        conn.commit()
    assert prepared.name not in _backend_statements(pg)
    assert _rows(pg, prepared, {"p_name": "n"}) == [(7, None, None)]
    assert prepared.name in _backend_statements(pg)


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
