"""Reading a schema: what reflection reads from each database, and what it
refuses rather than misread (a lost foreign key, a misread name, an unread schema).
"""

from __future__ import annotations

import pytest

from tests.conftest import TargetDB
from tests.integration.outcomes import SUBJECT, dump, pg_erase, rows
from worker.catalog.reflection import reflect
from worker.exceptions import (
    CrossSubjectReference,
    UnsupportedTable,
)
from worker.execution.erasure import dry_run, erase
from worker.planning.building import build_plan


def test_mysql_foreign_key_to_a_backticked_table_name_is_refused(mysql: TargetDB) -> None:
    """SQLAlchemy drops a MySQL foreign key whose referenced table name holds a backtick;
    erasing blind to it let ``ON DELETE CASCADE`` take tenant 7's row 11 along."""
    mysql.run(
        "CREATE TABLE `p``q` (id INT PRIMARY KEY, tenant_id INT, KEY (tenant_id))",
        "CREATE TABLE c (id INT PRIMARY KEY, tenant_id INT, pid INT NOT NULL, KEY (tenant_id),"
        " CONSTRAINT c_to_pq FOREIGN KEY (pid) REFERENCES `p``q` (id) ON DELETE CASCADE)",
        "INSERT INTO `p``q` VALUES (1, 42), (2, 7)",
        "INSERT INTO c VALUES (10, 42, 1), (11, 7, 1), (12, 7, 2)",
    )
    before = dump(mysql, "`p``q`", "c")
    assert before == {"`p``q`": [(1, 42), (2, 7)], "c": [(10, 42, 1), (11, 7, 1), (12, 7, 2)]}
    with pytest.raises(UnsupportedTable, match=r"c_to_pq.*could not be read"):
        reflect(mysql.engine)
    assert dump(mysql, "`p``q`", "c") == before


def test_mysql_column_name_with_a_backtick_is_refused(mysql: TargetDB) -> None:
    """SQLAlchemy reflects the column `we``ird` as "we``ird": every statement naming it
    failed with 1054 at erasure time. Refused at reflection, naming the table; a table
    whose column names hold no backtick is unaffected."""
    mysql.run(
        "CREATE TABLE t (id INT PRIMARY KEY, tenant_id INT, `we``ird` INT, KEY (tenant_id))",
        "CREATE TABLE plain (id INT PRIMARY KEY, tenant_id INT, KEY (tenant_id))",
        "INSERT INTO t VALUES (1, 42, 0), (2, 7, 0)",
    )
    before = dump(mysql, "t")
    with pytest.raises(UnsupportedTable, match=r"\.t: a column name holding a backtick"):
        reflect(mysql.engine)
    assert dump(mysql, "t") == before
    mysql.run("DROP TABLE t")
    assert [t.name for t in reflect(mysql.engine).tables] == ["plain"]


def _cross_database(mysql: TargetDB, x_rows: str) -> tuple[str, str]:
    """A's ``t`` referenced (cascading) from B's ``x``; B is the fixture's other
    database, dropped before A."""
    a, b = mysql.default_schema, str(mysql.other_schema)
    mysql.run(
        f"CREATE TABLE `{a}`.t (id INT PRIMARY KEY, tenant_id INT, KEY (tenant_id))",
        f"CREATE TABLE `{b}`.x (id INT PRIMARY KEY, tenant_id INT, tid INT NOT NULL,"
        f" KEY (tenant_id), FOREIGN KEY (tid) REFERENCES `{a}`.t (id) ON DELETE CASCADE)",
        f"INSERT INTO `{a}`.t VALUES (1, 42), (2, 7)",
        f"INSERT INTO `{b}`.x VALUES {x_rows}",
    )
    return f"`{a}`.t", f"`{b}`.x"


def test_mysql_reference_from_another_database_is_seen(mysql: TargetDB) -> None:
    """Only the databases A referenced were reflected, not those referencing A: the
    cascade removed tenant 7's x row (1, 7, 1) unseen."""
    t, x = _cross_database(mysql, "(1, 7, 1), (2, 7, 2)")
    before = dump(mysql, t, x)
    plan = build_plan(reflect(mysql.engine), ["tenant_id"])
    with pytest.raises(CrossSubjectReference):
        erase(mysql.engine, plan, SUBJECT)
    assert dump(mysql, t, x) == before
    assert before[x] == [(1, 7, 1), (2, 7, 2)]


def test_mysql_subject_rows_in_a_referencing_database_are_erased(mysql: TargetDB) -> None:
    t, x = _cross_database(mysql, "(1, 42, 1), (2, 7, 2)")
    plan = build_plan(reflect(mysql.engine), ["tenant_id"])
    assert f"{mysql.other_schema}.x" in {str(name) for name in plan.actions}
    report = erase(mysql.engine, plan, SUBJECT)
    assert report.verified
    assert report.total_rows == 2
    assert rows(mysql, t) == [(2, 7)]
    assert rows(mysql, x) == [(2, 7, 2)]


def test_mysql_system_versioned_table_is_warned_about(mysql: TargetDB) -> None:
    mysql.run(
        "CREATE TABLE plain (id INT PRIMARY KEY, tenant_id INT, KEY (tenant_id))",
        "CREATE TABLE versioned (id INT PRIMARY KEY, tenant_id INT, KEY (tenant_id))"
        " WITH SYSTEM VERSIONING",
        "INSERT INTO plain VALUES (1, 42), (2, 7)",
        "INSERT INTO versioned VALUES (1, 42), (2, 7)",
    )
    plan = build_plan(reflect(mysql.engine), ["tenant_id"])
    versioned = [w for w in plan.warnings if "system-versioned" in w]
    assert len(versioned) == 1
    assert "versioned" in versioned[0]
    assert "plain" not in versioned[0]
    report = erase(mysql.engine, plan, SUBJECT)
    assert report.verified
    assert any("system-versioned" in w for w in report.warnings)
    assert rows(mysql, "versioned") == [(2, 7)]


def test_pg_table_other_tables_inherit_from_is_refused(pg: TargetDB) -> None:
    """Statements on an INHERITS parent reach its children's rows: tenant 7's row in
    ev_x shared a ctid with the subject's row in ev and went with it."""
    pg.run(
        "CREATE TABLE ev (id int PRIMARY KEY, tenant_id int)",
        "CREATE TABLE ev_x () INHERITS (ev)",
        "INSERT INTO ev VALUES (1, 42), (2, 7)",
        "INSERT INTO ev_x VALUES (3, 7), (4, 7)",
    )
    before = dump(pg, "ONLY ev", "ev_x")
    with pytest.raises(UnsupportedTable, match="inherit"):
        build_plan(reflect(pg.engine), ["tenant_id"])
    assert dump(pg, "ONLY ev", "ev_x") == before


def test_pg_partial_unique_index_is_not_a_row_key(pg: TargetDB) -> None:
    """A partial unique index served as c's row key: deleting by email took tenant 7's
    archived row with the same email."""
    pg.run(
        "CREATE TABLE p (id int PRIMARY KEY, tenant_id int)",
        "CREATE TABLE c (code int UNIQUE, p_id int NOT NULL REFERENCES p,"
        " email text NOT NULL, archived bool NOT NULL)",
        "CREATE UNIQUE INDEX c_live_email ON c (email) WHERE NOT archived",
        "CREATE TABLE cc (id int PRIMARY KEY, code int REFERENCES c (code))",
        "INSERT INTO p VALUES (1, 7), (2, 42)",
        "INSERT INTO c VALUES (NULL, 1, 'dup', true), (3, 2, 'dup', true)",
        "INSERT INTO cc VALUES (1, 3)",
    )
    expected, report = pg_erase(pg, ["tenant_id"], fk_checks="database")
    assert report.verified
    assert report.total_rows == expected == 3
    assert rows(pg, "c") == [(None, 1, "dup", True)]


def test_pg_cascade_from_a_schema_not_read_is_refused(pg: TargetDB) -> None:
    """Reflecting only ``public``, a CASCADE from the other schema took tenant 7's row
    there along, unseen; a NO ACTION reference from there is left to the database."""
    other = f'"{pg.other_schema}"'
    pg.run(
        "CREATE TABLE p (id int PRIMARY KEY, tenant_id int)",
        f"CREATE TABLE {other}.c (id int PRIMARY KEY, tenant_id int,"
        " p_id int REFERENCES public.p ON DELETE CASCADE)",
        "INSERT INTO p VALUES (1, 42), (2, 7)",
        f"INSERT INTO {other}.c VALUES (1, 7, 1)",
    )
    plan = build_plan(reflect(pg.engine, ["public"]), ["tenant_id"])
    before = dump(pg, "p", f"{other}.c")
    for run in (dry_run, erase):
        with pytest.raises(UnsupportedTable, match="was not read"):
            run(pg.engine, plan, SUBJECT)
    assert dump(pg, "p", f"{other}.c") == before
    pg.run(
        f"ALTER TABLE {other}.c DROP CONSTRAINT c_p_id_fkey,"
        " ADD CONSTRAINT c_p_id_fkey FOREIGN KEY (p_id) REFERENCES public.p",
        f"UPDATE {other}.c SET p_id = 2",
    )
    report = erase(pg.engine, build_plan(reflect(pg.engine, ["public"]), ["tenant_id"]), SUBJECT)
    assert report.verified
    assert rows(pg, "p") == [(2, 7)]


def test_pg_set_null_column_list_naming_a_quoted_column(pg: TargetDB) -> None:
    """``SET NULL ("x""y")`` was read as a column named 'x""y': the UPDATE set nothing."""
    pg.run(
        "CREATE TABLE p (org int, id int, tenant_id int, PRIMARY KEY (org, id))",
        "CREATE INDEX ON p (tenant_id)",
        'CREATE TABLE c (id int PRIMARY KEY, org int, "x""y" int,'
        ' FOREIGN KEY (org, "x""y") REFERENCES p (org, id) ON DELETE SET NULL ("x""y"))',
        'CREATE INDEX ON c (org, "x""y")',
        "INSERT INTO p VALUES (1, 1, 42), (1, 2, 7)",
        "INSERT INTO c VALUES (10, 1, 1), (11, 1, 2)",
    )
    expected, report = pg_erase(pg, ["tenant_id"])
    assert report.verified
    assert report.total_rows == expected == 1
    assert rows(pg, "c") == [(10, 1, None), (11, 1, 2)]


def test_pg_foreign_key_on_a_column_named_with_a_comma_is_refused(pg: TargetDB) -> None:
    """SQLAlchemy splits the column list on the comma: a KeyError at plan time."""
    pg.run(
        "CREATE TABLE p (org int, id int, tenant_id int, PRIMARY KEY (org, id))",
        'CREATE TABLE c (id int PRIMARY KEY, org int, "x,y" int,'
        ' FOREIGN KEY (org, "x,y") REFERENCES p (org, id))',
    )
    with pytest.raises(UnsupportedTable, match=r"public\.c: its foreign key .* could not be read"):
        reflect(pg.engine)
