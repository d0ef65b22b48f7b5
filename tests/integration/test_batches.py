"""Batches (``worker.execution``): retries against racing writers bounded whatever the
depth, tables with rules on their writes, and names that could clash with the
server-side loop's.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import TargetDB
from tests.integration.outcomes import SUBJECT, dump, pg_erase, rows
from worker.catalog.reflection import reflect
from worker.execution.erasure import erase
from worker.execution.options import ExecutionOptions
from worker.faults import DatabaseFailure
from worker.planning.building import build_plan


@pytest.mark.parametrize("fk_checks", ["auto", "database"])
def test_foreign_key_retries_do_not_multiply_with_depth(pg: TargetDB, fk_checks: str) -> None:
    """A reference the reflection does not see (schema b) makes the deepest delete fail
    every time; each level of the chain retried the whole level below it (85 DELETE
    statements with ``auto``, 125 with ``database``, before giving up)."""
    pg.run(
        "CREATE SCHEMA a",
        "CREATE SCHEMA b",
        "CREATE TABLE a.t0 (id INT PRIMARY KEY, tenant_id INT NOT NULL)",
        "CREATE INDEX ON a.t0 (tenant_id)",
        *(
            stmt
            for i in (1, 2, 3)
            for stmt in (
                f"CREATE TABLE a.t{i} (id INT PRIMARY KEY,"
                f" pid INT NOT NULL REFERENCES a.t{i - 1} (id))",
                f"CREATE INDEX ON a.t{i} (pid)",
            )
        ),
        "CREATE TABLE b.x (id INT PRIMARY KEY, pid INT NOT NULL REFERENCES a.t3 (id))",
        "INSERT INTO a.t0 VALUES (1, 42), (2, 7)",
        "INSERT INTO a.t1 VALUES (1, 1), (2, 2)",
        "INSERT INTO a.t2 VALUES (1, 1), (2, 2)",
        "INSERT INTO a.t3 VALUES (1, 1), (2, 2)",
        "INSERT INTO b.x VALUES (1, 1)",
    )
    tables = ("a.t0", "a.t1", "a.t2", "a.t3", "b.x")
    before = dump(pg, *tables)
    plan = build_plan(reflect(pg.engine, ["a"]), ["tenant_id"])
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        head = statement.lstrip().upper()
        if head.startswith(("DELETE", "DO")):
            statements.append(head)

    options = ExecutionOptions(server_batches=False, fk_checks=fk_checks)
    sa.event.listen(pg.engine, "before_cursor_execute", count)
    try:
        with pytest.raises(DatabaseFailure) as refused:
            erase(pg.engine, plan, SUBJECT, options)
    finally:
        sa.event.remove(pg.engine, "before_cursor_execute", count)
    assert refused.value.code == "23503"
    assert dump(pg, *tables) == before
    assert statements, "the erasure never tried to delete"
    assert len(statements) <= 5 * 4 + 5, len(statements)


def test_pg_table_named_like_a_loop_variable(pg: TargetDB) -> None:
    """A table named eraser_n was an ambiguous whole-row reference in the server loop."""
    pg.run(
        "CREATE TABLE eraser_n (id int PRIMARY KEY, tenant_id int)",
        "INSERT INTO eraser_n VALUES (1, 42), (2, 7)",
    )
    expected, report = pg_erase(pg, ["tenant_id"])
    assert report.verified
    assert report.total_rows == expected == 1
    assert rows(pg, "eraser_n") == [(2, 7)]


@pytest.mark.parametrize("server_batches", [True, False], ids=["server", "client"])
def test_pg_leaf_table_with_a_rule_on_delete_is_erased_and_the_rule_runs(
    pg: TargetDB, server_batches: bool
) -> None:
    """A rule on DELETE (an audit log) cannot run under a DELETE inside WITH or with
    RETURNING: every erasure of such a leaf failed with FeatureNotSupported (0A000)."""
    pg.run(
        "CREATE TABLE c_log (id int)",
        "CREATE TABLE c (id int PRIMARY KEY, tenant_id int)",
        "CREATE INDEX ON c (tenant_id)",
        "INSERT INTO c SELECT g, CASE WHEN mod(g, 3) = 0 THEN 7 ELSE 42 END"
        " FROM generate_series(1, 30) g",
        "CREATE RULE keep_log AS ON DELETE TO c DO ALSO INSERT INTO c_log VALUES (OLD.id)",
    )
    expected, report = pg_erase(pg, ["tenant_id"], server_batches)
    assert report.verified
    assert report.total_rows == expected == 20
    assert [r[0] for r in rows(pg, "c")] == list(range(3, 31, 3))
    assert sorted(r[0] for r in rows(pg, "c_log")) == [g for g in range(1, 31) if g % 3]


def test_pg_rule_that_keeps_the_rows_ends_unverified(pg: TargetDB) -> None:
    """``DO INSTEAD NOTHING``: the rows cannot go; the erasure says so (not verified)
    instead of failing on the statement's form or looping."""
    pg.run(
        "CREATE TABLE c (id int PRIMARY KEY, tenant_id int)",
        "CREATE INDEX ON c (tenant_id)",
        "INSERT INTO c VALUES (1, 42), (2, 7)",
        "CREATE RULE keep AS ON DELETE TO c DO INSTEAD NOTHING",
    )
    _, report = pg_erase(pg, ["tenant_id"])
    assert not report.verified
    assert report.total_rows == 0
    assert rows(pg, "c") == [(1, 42), (2, 7)]
