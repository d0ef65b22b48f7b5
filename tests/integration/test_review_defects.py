"""Regression tests for defects found in review, one test (or backend) each.

Each test builds a tiny schema whose rows' owners are known, and asserts exactly which
rows survive (or that nothing was touched when the engine must refuse): a test that
only checked "no exception" would pass with the defect back in place.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
from contextlib import ExitStack
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from api.cli import EXIT_ERROR, EXIT_NOTHING_MATCHED, EXIT_OK, main
from models.erasure import TableAction, TablePolicy
from tests.conftest import TargetDB
from worker.catalog import reflect
from worker.database import create_engine
from worker.exceptions import (
    CrossSubjectReference,
    PolicyConflict,
    UnsatisfiablePlan,
    UnsupportedTable,
)
from worker.executor import ExecutionOptions, dry_run, erase
from worker.faults import DatabaseFailure
from worker.planner import build_plan, coerce_subject

SUBJECT = 42
Rows = list[tuple[Any, ...]]


def rows(db: TargetDB, table: str, order: str = "1") -> Rows:
    """Every row of ``table`` (a quoted SQL name), in ``order``."""
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY {order}")]


def dump(db: TargetDB, *tables: str) -> dict[str, Rows]:
    """Every row of every table, sorted: compared before and after a refusal."""
    return {t: sorted(rows(db, t), key=repr) for t in tables}


# --- 1. MariaDB: a foreign key the reflection cannot parse -------------------------------


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


# --- 2. MariaDB: subject columns in other character sets ---------------------------------

CAFE_ROWS = ["café", "CAFÉ", "café ", "cafe", "café"]


def test_mysql_text_subject_in_latin1_and_utf16_columns_matches_exactly(
    mysql: TargetDB,
) -> None:
    """The exact-match comparison compared a latin1/utf16 column's own bytes with the
    utf8mb4 bytes of the subject: 'café' matched nothing there."""
    tables = ("t_latin1", "t_utf16", "t_default_latin1")
    mysql.run(
        "CREATE TABLE t_latin1 (id INT PRIMARY KEY,"
        " tenant VARCHAR(20) CHARACTER SET latin1, KEY (tenant))",
        "CREATE TABLE t_utf16 (id INT PRIMARY KEY,"
        " tenant VARCHAR(20) CHARACTER SET utf16, KEY (tenant))",
        "CREATE TABLE t_default_latin1 (id INT PRIMARY KEY, tenant VARCHAR(20), KEY (tenant))"
        " DEFAULT CHARSET=latin1",
    )
    with mysql.engine.begin() as conn:
        for table in tables:
            conn.execute(
                sa.text(f"INSERT INTO {table} (id, tenant) VALUES (:id, :tenant)"),
                [{"id": i, "tenant": v} for i, v in enumerate(CAFE_ROWS, 1)],
            )
    plan = build_plan(reflect(mysql.engine), ["tenant"])
    assert dry_run(mysql.engine, plan, "café").total_rows == 2 * len(tables)
    report = erase(mysql.engine, plan, "café", ExecutionOptions(batch_size=2))
    assert report.verified
    assert report.total_rows == 2 * len(tables)
    for table in tables:
        assert rows(mysql, table, "id") == [(2, "CAFÉ"), (3, "café "), (4, "cafe")], table


# --- 3. SQLite: a column named rowid ----------------------------------------------------


def test_sqlite_table_with_a_column_named_rowid(sqlite_db: TargetDB) -> None:
    """The walk addressed rows by ``rowid``, which here is the user's column: deleting
    'rowid IN (1, NULL)' took tenant 7's row (1, 7, 'b') and never the NULL one."""
    sqlite_db.run(
        "CREATE TABLE log (rowid INT, tenant_id INT, msg TEXT)",
        "CREATE INDEX log_tenant ON log (tenant_id)",
        "INSERT INTO log VALUES (1, 42, 'a'), (1, 7, 'b'), (2, 7, 'c'), (NULL, 42, 'd')",
    )
    plan = build_plan(reflect(sqlite_db.engine), ["tenant_id"])
    report = erase(sqlite_db.engine, plan, SUBJECT, ExecutionOptions(batch_size=1))
    assert report.verified is True
    assert report.total_rows == 2
    assert rows(sqlite_db, "log", "msg") == [(1, 7, "b"), (2, 7, "c")]


def test_sqlite_table_hiding_every_rowid_name_is_refused(sqlite_db: TargetDB) -> None:
    sqlite_db.run(
        "CREATE TABLE log (rowid INT, _rowid_ INT, oid INT, tenant_id INT, msg TEXT)",
        "INSERT INTO log VALUES (1, 1, 1, 42, 'a'), (1, 1, 1, 7, 'b')",
    )
    plan = build_plan(reflect(sqlite_db.engine), ["tenant_id"])
    with pytest.raises(UnsupportedTable, match="rowid"):
        erase(sqlite_db.engine, plan, SUBJECT)
    assert rows(sqlite_db, "log", "msg") == [(1, 1, 1, 42, "a"), (1, 1, 1, 7, "b")]


# --- 4. MariaDB: a referenced table without a usable key --------------------------------


def test_mysql_referenced_table_without_a_key_is_refused(mysql: TargetDB) -> None:
    """Such a table was deleted with ``DELETE ... LIMIT``, its references left to the
    database: ``ON DELETE CASCADE`` removed c's row 10, also referenced by tenant 7."""
    mysql.run(
        "CREATE TABLE p (tenant_id INT, code INT NOT NULL, KEY (code), KEY (tenant_id))",
        "CREATE TABLE c (id INT PRIMARY KEY, code INT NOT NULL,"
        " FOREIGN KEY (code) REFERENCES p (code) ON DELETE CASCADE)",
        "INSERT INTO p VALUES (42, 1), (7, 1), (7, 2)",
        "INSERT INTO c VALUES (10, 1), (11, 2)",
    )
    before = dump(mysql, "p", "c")
    plan = build_plan(reflect(mysql.engine), ["tenant_id"])
    with pytest.raises(UnsupportedTable, match="no primary key"):
        erase(mysql.engine, plan, SUBJECT)
    assert dump(mysql, "p", "c") == before
    assert len(before["p"]) == 3
    assert len(before["c"]) == 2


# --- 5. Retries do not multiply with depth ----------------------------------------------


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


# --- 7. MariaDB: references from another database ---------------------------------------


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


# --- 10. SQLite: NULL in a primary key --------------------------------------------------


def test_sqlite_rows_with_a_null_primary_key_are_erased(sqlite_db: TargetDB) -> None:
    """SQLite lets a non-INTEGER primary key hold NULLs; such rows were never matched by
    'code IN (...)', so the erasure could not finish."""
    sqlite_db.run(
        "CREATE TABLE t (code TEXT PRIMARY KEY, tenant_id INT)",
        "CREATE INDEX t_tenant ON t (tenant_id)",
        "INSERT INTO t VALUES (NULL, 42), (NULL, 42), ('a', 42), ('b', 7)",
    )
    plan = build_plan(reflect(sqlite_db.engine), ["tenant_id"])
    report = erase(sqlite_db.engine, plan, SUBJECT, ExecutionOptions(batch_size=2))
    assert report.verified is True
    assert report.total_rows == 3
    assert rows(sqlite_db, "t") == [("b", 7)]


# --- 11. MariaDB: system-versioned tables -----------------------------------------------


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


# --- 12/13. Subject values from the command line ----------------------------------------


@pytest.fixture
def accounts_url(sqlite_db: TargetDB) -> str:
    sqlite_db.run(
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, tenant_id INTEGER, email TEXT,"
        " active BOOLEAN, created DATETIME)",
        "CREATE INDEX accounts_tenant ON accounts (tenant_id)",
        "INSERT INTO accounts VALUES"
        " (1, 42, 'jane@example.com', 1, '2024-01-01 00:00:00.000000'),"
        " (2, 42, 'joe@example.com', 0, '2024-01-02 00:00:00.000000'),"
        " (3, 7, 'ann@example.com', 1, '2024-01-03 00:00:00.000000')",
    )
    return sqlite_db.url


def _accounts(url: str) -> Rows:
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        return [tuple(r) for r in conn.execute("SELECT * FROM accounts ORDER BY id")]
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("column", "subject"),
    [
        pytest.param("tenant_id", "4_2", id="underscore"),
        pytest.param("tenant_id", "\u0664\u0662", id="arabic-indic-digits"),
        pytest.param("tenant_id", "\udcff42", id="surrogate-int"),
        pytest.param("email", "\udcff42", id="surrogate-text"),
        pytest.param("active", "jane@example.com", id="boolean"),
        pytest.param("created", "jane@example.com", id="datetime"),
    ],
)
@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "erase"])
def test_cli_refuses_a_subject_that_does_not_fit_its_column(
    accounts_url: str, capsys: pytest.CaptureFixture[str], column: str, subject: str, dry: bool
) -> None:
    before = _accounts(accounts_url)
    argv = ["erase", "--db", accounts_url, "--subject-column", column, "--subject", subject]
    assert main([*argv, "--dry-run"] if dry else [*argv, "--yes"]) == EXIT_ERROR
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("eraser: error: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert "is not a valid" in err, err
    assert f"column main.accounts.{column}" in err, err
    assert subject not in err
    assert _accounts(accounts_url) == before


def test_cli_integer_subject_beyond_64_bits_matches_nothing(
    accounts_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """No integer column holds it (and SQLite's driver cannot even send it): nothing
    matched (exit 4), as in the quick check; no traceback (it was an ``OverflowError``)."""
    before = _accounts(accounts_url)
    subject = "99999999999999999999999"
    argv = ["erase", "--db", accounts_url, "--subject-column", "tenant_id", "--subject", subject]
    for dry in (True, False):
        mode = ["--dry-run"] if dry else ["--yes"]
        assert main([*argv, "--json", *mode]) == EXIT_NOTHING_MATCHED
        out, err = capsys.readouterr()
        assert err == ""
        report = json.loads(out)
        assert report["nothing_matched"] is True
        assert report["total_rows"] == 0
        assert report["verified"] is not dry
    assert _accounts(accounts_url) == before


@pytest.mark.parametrize("subject", [" 42 ", "+42", "42"])
def test_cli_integer_subject_with_spaces_or_sign_still_works(
    accounts_url: str, capsys: pytest.CaptureFixture[str], subject: str
) -> None:
    argv = ["erase", "--db", accounts_url, "--subject-column", "tenant_id", "--subject", subject]
    assert main([*argv, "--dry-run", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["total_rows"] == 2
    assert main([*argv, "--json", "--yes"]) == EXIT_OK
    done = json.loads(capsys.readouterr().out)
    assert done["verified"] is True
    assert done["total_rows"] == 2
    assert [r[:2] for r in _accounts(accounts_url)] == [(3, 7)]


@pytest.mark.parametrize(
    ("value", "type_", "expected"),
    [
        ("true", sa.Boolean(), True),
        ("False", sa.Boolean(), False),
        (" 0 ", sa.Boolean(), False),
        (" 42 ", sa.Integer(), 42),
        ("+42", sa.BigInteger(), 42),
        ("2024-01-01 00:00:00", sa.DateTime(), datetime.datetime(2024, 1, 1)),
    ],
)
def test_coerce_subject_converts_what_fits(
    value: str, type_: sa.types.TypeEngine[Any], expected: object
) -> None:
    result = coerce_subject(value, type_, "t.c")
    assert result == expected
    assert type(result) is type(expected)


def test_coerce_subject_true_is_a_boolean() -> None:
    assert coerce_subject("true", sa.Boolean(), "t.c") is True


# --- 14. Session settings do not leak into the pool -------------------------------------


def _session_setting(conn: sa.Connection, backend: str) -> str:
    if backend == "mysql":
        return str(conn.exec_driver_sql("SELECT @@session.innodb_lock_wait_timeout").scalar())
    return str(conn.exec_driver_sql("SHOW max_parallel_workers_per_gather").scalar())


@pytest.mark.parametrize("db", ["mysql", "postgresql"], indirect=True)
def test_erasure_session_settings_are_reset_before_the_pool(db: TargetDB) -> None:
    """``session_setup`` changed the erasure connection's lock wait (MariaDB) or its
    parallel workers (PostgreSQL) for good, and the pool handed it on like that."""
    if db.backend == "postgresql":
        # A per-database default that differs from the erasure's 0, whatever the server.
        db.run(f'ALTER DATABASE "{db.engine.url.database}" SET max_parallel_workers_per_gather = 3')
        fresh = create_engine(db.url, poolclass=NullPool)
        with fresh.connect() as conn:
            expected = _session_setting(conn, db.backend)
        fresh.dispose()
        assert expected == "3"
        timeout_ms = 1000
    else:
        with db.engine.connect() as conn:
            server = conn.exec_driver_sql("SELECT @@global.innodb_lock_wait_timeout")
            expected = str(server.scalar())
        timeout_ms = 1000 if expected != "1" else 2000
    db.run(
        "CREATE TABLE t (id INT PRIMARY KEY, tenant_id INT NOT NULL)",
        "CREATE INDEX t_tenant ON t (tenant_id)",
        "INSERT INTO t VALUES (1, 42), (2, 7)",
    )
    # Two connections: the erasure's own, and the one holding the subject lock (with
    # pool_size=1 the lock's checkout would wait for the erasure's own connection).
    engine = create_engine(db.url, pool_size=2, max_overflow=0, pool_timeout=10)
    try:
        plan = build_plan(reflect(engine), ["tenant_id"])
        report = erase(engine, plan, SUBJECT, ExecutionOptions(lock_timeout_ms=timeout_ms))
        assert report.verified
        assert report.total_rows == 1
        # Every pooled connection at once: the erasure's is among them.
        with ExitStack() as stack:
            conns = [stack.enter_context(engine.connect()) for _ in range(2)]
            assert [_session_setting(c, db.backend) for c in conns] == [expected] * 2
    finally:
        engine.dispose()
    assert rows(db, "t") == [(2, 7)]


# --- 6. Chains that go round a multi-table cycle many times ------------------------------


def _cycle_chain(db: TargetDB, rounds: int) -> None:
    """a(1) holds the subject; b(i) references a(i), a(i + 1) references b(i): a chain of
    2 * rounds + 1 subject rows going round the cycle a <-> b ``rounds`` times. c2 holds
    another subject's row referencing the chain's last a row; k (kept) is empty."""
    a_to_b = "b_id INT NULL REFERENCES b (id)"
    b_to_a = "a_id INT NOT NULL" + (" REFERENCES a (id)" if db.backend == "sqlite" else "")
    db.run(
        f"CREATE TABLE b (id INT PRIMARY KEY, {b_to_a})",
        f"CREATE TABLE a (id INT PRIMARY KEY, tenant_id INT, {a_to_b})",
        "CREATE INDEX a_tenant ON a (tenant_id)",
    )
    if db.backend != "sqlite":
        db.run("ALTER TABLE b ADD CONSTRAINT b_to_a FOREIGN KEY (a_id) REFERENCES a (id)")
    db.run(
        "CREATE TABLE c2 (id INT PRIMARY KEY, tenant_id INT, a_id INT NOT NULL REFERENCES a (id))",
        "INSERT INTO a VALUES (1, 42, NULL), (1000, 7, NULL)",
    )
    with db.engine.begin() as conn:
        for i in range(1, rounds + 1):
            conn.execute(sa.text("INSERT INTO b VALUES (:i, :i)"), {"i": i})
            conn.execute(sa.text("INSERT INTO a VALUES (:n, NULL, :i)"), {"n": i + 1, "i": i})


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_chain_round_a_cycle_forty_times_is_counted_and_checked_in_full(db: TargetDB) -> None:
    """The cycle's membership was unrolled three times round: the dry run counted 7 of
    the chain's rows and the pre-flight missed another subject's row at its far end."""
    rounds = 40
    _cycle_chain(db, rounds)
    db.run(f"INSERT INTO c2 VALUES (1, 7, {rounds + 1})")
    plan = build_plan(reflect(db.engine), ["a.tenant_id", "c2.tenant_id"])
    before = dump(db, "a", "b", "c2")
    with pytest.raises(CrossSubjectReference):
        dry_run(db.engine, plan, SUBJECT)
    with pytest.raises(CrossSubjectReference):
        erase(db.engine, plan, SUBJECT)
    assert dump(db, "a", "b", "c2") == before
    db.run("DELETE FROM c2")
    assert dry_run(db.engine, plan, SUBJECT).total_rows == 2 * rounds + 1
    report = erase(db.engine, plan, SUBJECT, ExecutionOptions(batch_size=7))
    assert report.verified
    assert report.total_rows == 2 * rounds + 1
    assert rows(db, "a") == [(1000, 7, None)]
    assert rows(db, "b") == []


def test_a_chain_deeper_than_the_database_can_follow_is_refused(mysql: TargetDB) -> None:
    """MariaDB's thread stack ends the unrolled statement at some 12 times round: the
    plan is refused before anything is touched, not run with a partial pre-flight."""
    _cycle_chain(mysql, 30)
    plan = build_plan(reflect(mysql.engine), ["a.tenant_id", "c2.tenant_id"])
    before = dump(mysql, "a", "b", "c2")
    for run in (dry_run, erase):
        with pytest.raises(UnsatisfiablePlan, match="too deep for this database"):
            run(mysql.engine, plan, SUBJECT)
    assert dump(mysql, "a", "b", "c2") == before


# --- 9. SQLite: a subject column without a declared type ---------------------------------


@pytest.mark.parametrize("subject", ["42", 42], ids=["text", "integer"])
def test_sqlite_untyped_subject_column_matches_the_number_and_its_exact_text(
    sqlite_db: TargetDB, subject: object
) -> None:
    """Such a column keeps 42, '42' and 42.0 as they came; the CLI's '42' matched only
    the text, left the numbers behind and still reported verified."""
    sqlite_db.run(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, tenant_id)",
        "INSERT INTO t VALUES (1, 42), (2, '42'), (3, '42.0'), (4, 42.0), (5, 'abc'),"
        " (6, 0), (7, 7), (8, ' 42'), (9, NULL)",
    )
    plan = build_plan(reflect(sqlite_db.engine), ["tenant_id"])
    assert dry_run(sqlite_db.engine, plan, subject).total_rows == 3
    report = erase(sqlite_db.engine, plan, subject)
    assert report.verified
    assert report.total_rows == 3
    assert [r[0] for r in rows(sqlite_db, "t", "id")] == [3, 5, 6, 7, 8, 9]
    assert dry_run(sqlite_db.engine, plan, "abc").total_rows == 1
    assert dry_run(sqlite_db.engine, plan, "0").total_rows == 1


# --- PostgreSQL -------------------------------------------------------------------------


def _pg_erase(
    pg: TargetDB, columns: list[str], server_batches: bool = True, fk_checks: str = "auto"
) -> tuple[int, Any]:
    plan = build_plan(reflect(pg.engine), columns)
    expected = dry_run(pg.engine, plan, SUBJECT).total_rows
    options = ExecutionOptions(batch_size=1, server_batches=server_batches, fk_checks=fk_checks)
    return expected, erase(pg.engine, plan, SUBJECT, options)


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


def test_pg_table_named_like_a_loop_variable(pg: TargetDB) -> None:
    """A table named eraser_n was an ambiguous whole-row reference in the server loop."""
    pg.run(
        "CREATE TABLE eraser_n (id int PRIMARY KEY, tenant_id int)",
        "INSERT INTO eraser_n VALUES (1, 42), (2, 7)",
    )
    expected, report = _pg_erase(pg, ["tenant_id"])
    assert report.verified
    assert report.total_rows == expected == 1
    assert rows(pg, "eraser_n") == [(2, 7)]


@pytest.mark.parametrize("server_batches", [True, False], ids=["server", "client"])
def test_pg_set_null_with_a_column_list(pg: TargetDB, server_batches: bool) -> None:
    """PostgreSQL 15's ``ON DELETE SET NULL (col)`` was read as NO ACTION: the posts
    were deleted, and with a composite key the tenant column would have been cleared."""
    pg.run(
        "CREATE TABLE users (tenant_id int, id int, PRIMARY KEY (tenant_id, id))",
        "CREATE TABLE posts (id int PRIMARY KEY, tenant_id int NOT NULL, author_id int,"
        " FOREIGN KEY (tenant_id, author_id) REFERENCES users ON DELETE SET NULL (author_id))",
        "INSERT INTO users VALUES (42, 1), (7, 2)",
        "INSERT INTO posts VALUES (10, 42, 1), (11, 7, 2)",
    )
    expected, report = _pg_erase(pg, ["users.tenant_id"], server_batches)
    assert report.verified
    assert report.total_rows == expected == 1
    assert rows(pg, "posts") == [(10, 42, None), (11, 7, 2)]
    assert rows(pg, "users") == [(7, 2)]


@pytest.mark.parametrize("server_batches", [True, False], ids=["server", "client"])
def test_pg_set_null_self_reference_among_the_subjects_rows(
    pg: TargetDB, server_batches: bool
) -> None:
    """A SET NULL self-reference between the subject's rows recursed without end."""
    pg.run(
        "CREATE TABLE cat (id int PRIMARY KEY,"
        " parent_id int REFERENCES cat ON DELETE SET NULL, tenant_id int)",
        "INSERT INTO cat VALUES (7, 7, 42), (8, 9, 42), (9, 8, 42), (10, 7, 7), (11, NULL, 7)",
    )
    expected, report = _pg_erase(pg, ["tenant_id"], server_batches)
    assert report.verified
    assert report.total_rows == expected == 3
    assert rows(pg, "cat") == [(10, None, 7), (11, None, 7)]


@pytest.mark.parametrize("server_batches", [True, False], ids=["server", "client"])
def test_pg_subject_rows_behind_a_set_null_reference_are_deleted_not_cleared(
    pg: TargetDB, server_batches: bool
) -> None:
    """With Eraser checking references, a SET NULL clear nested under a swept child
    stripped z's subject row of its key and left it (with its PII), verified."""
    pg.run(
        "CREATE TABLE p (id int PRIMARY KEY, tenant_id int)",
        "CREATE TABLE c (tenant_id int NOT NULL, id int NOT NULL,"
        " p_id int NOT NULL REFERENCES p, PRIMARY KEY (tenant_id, id))",
        "CREATE TABLE z (id int PRIMARY KEY, tenant_id int, c_id int, secret text,"
        " FOREIGN KEY (tenant_id, c_id) REFERENCES c ON DELETE SET NULL)",
        "INSERT INTO p VALUES (1, 42), (2, 7)",
        "INSERT INTO c VALUES (42, 1, 1), (7, 2, 2)",
        "INSERT INTO z VALUES (1, 42, 1, 'pii of 42'), (2, 7, 2, 'x')",
    )
    expected, report = _pg_erase(pg, ["p.tenant_id", "z.tenant_id"], server_batches)
    assert report.verified
    assert report.total_rows == expected == 3
    assert rows(pg, "z") == [(2, 7, 2, "x")]


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
    expected, report = _pg_erase(pg, ["tenant_id"], fk_checks="database")
    assert report.verified
    assert report.total_rows == expected == 3
    assert rows(pg, "c") == [(None, 1, "dup", True)]


def test_pg_two_self_references_on_one_table(pg: TargetDB) -> None:
    """Two self-referencing keys made the tree CTE ``(base UNION r1) UNION r2``, which
    PostgreSQL refuses (InvalidRecursion): every dry run and erasure failed."""
    pg.run(
        "CREATE TABLE emp (id int PRIMARY KEY, tenant_id int,"
        " manager_id int REFERENCES emp, mentor_id int REFERENCES emp)",
        "INSERT INTO emp VALUES (1, 42, NULL, NULL), (2, 42, 1, 1), (3, 7, NULL, NULL),"
        " (4, NULL, 2, 3)",
    )
    expected, report = _pg_erase(pg, ["tenant_id"])
    assert report.verified
    assert report.total_rows == expected == 3
    assert rows(pg, "emp") == [(3, 7, None, None)]


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


# --- Second review, PostgreSQL -----------------------------------------------------------

TYPES = {"citext": "citext", "collation": "text COLLATE ci"}
CI_COLLATION = (
    "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)"
)


@pytest.mark.parametrize("kind", ["citext", "collation"])
def test_pg_key_compared_ignoring_case_is_refused(pg: TargetDB, kind: str) -> None:
    """The database takes c's 'A' as a reference to p's 'a'; the walk matched references
    byte for byte and left c(2) pointing at nothing, verified. Refused instead."""
    key = "citext" if kind == "citext" else "text COLLATE ci"
    pg.run(
        "CREATE EXTENSION IF NOT EXISTS citext",
        CI_COLLATION,
        f"CREATE TABLE p (k {key} PRIMARY KEY, tenant_id int)",
        "CREATE INDEX ON p (tenant_id)",
        f"CREATE TABLE c (id int PRIMARY KEY, k {'citext' if kind == 'citext' else 'text'}"
        " REFERENCES p (k))",
        "CREATE INDEX ON c (k)",
        "INSERT INTO p VALUES ('a', 42), ('b', 7)",
        "INSERT INTO c VALUES (1, 'a'), (2, 'A'), (3, 'b')",
    )
    with pytest.raises(UnsupportedTable, match=r"public\.c: .* ignoring case or accents"):
        build_plan(reflect(pg.engine), ["tenant_id"])


@pytest.mark.parametrize("server_batches", [True, False], ids=["server", "client"])
@pytest.mark.parametrize("kind", ["citext", "collation"])
def test_pg_subject_column_that_ignores_case_matches_exactly(
    pg: TargetDB, kind: str, server_batches: bool
) -> None:
    """'acme' took 'ACME' and 'Acme' along: the subject is compared exactly, as on
    MariaDB."""
    pg.run(
        "CREATE EXTENSION IF NOT EXISTS citext",
        CI_COLLATION,
        f"CREATE TABLE t (id int PRIMARY KEY, tenant {TYPES[kind]})",
        "CREATE INDEX ON t (tenant)",
        "INSERT INTO t VALUES (1, 'acme'), (2, 'ACME'), (3, 'Acme'), (4, 'other')",
    )
    plan = build_plan(reflect(pg.engine), ["tenant"])
    assert dry_run(pg.engine, plan, "acme").total_rows == 1
    report = erase(pg.engine, plan, "acme", ExecutionOptions(server_batches=server_batches))
    assert (report.total_rows, report.verified) == (1, True)
    assert rows(pg, "t") == [(2, "ACME"), (3, "Acme"), (4, "other")]


def test_pg_row_level_security_hiding_subject_rows_fails_instead_of_skipping_them(
    pg_plain: TargetDB,
) -> None:
    """A policy hid row 2 from the erasure's role, which reported the subject gone."""
    pg_plain.run(
        "CREATE TABLE t (id int PRIMARY KEY, tenant_id int, hidden bool)",
        "CREATE INDEX ON t (tenant_id)",
        "INSERT INTO t VALUES (1, 42, false), (2, 42, true), (3, 7, false)",
        "ALTER TABLE t ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE t FORCE ROW LEVEL SECURITY",
        "CREATE POLICY vis ON t USING (NOT hidden)",
    )
    plan = build_plan(reflect(pg_plain.engine), ["tenant_id"])
    for run in (dry_run, erase):
        with pytest.raises(DatabaseFailure, match='row-level security policy for table "t"'):
            run(pg_plain.engine, plan, SUBJECT)
    admin = create_engine(sa.make_url(pg_plain.url).set(username="postgres"))
    try:
        with admin.connect() as conn:
            kept = conn.exec_driver_sql("SELECT id FROM t ORDER BY id").scalars().all()
    finally:
        admin.dispose()
    assert kept == [1, 2, 3]


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
    expected, report = _pg_erase(pg, ["tenant_id"], server_batches)
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
    _, report = _pg_erase(pg, ["tenant_id"])
    assert not report.verified
    assert report.total_rows == 0
    assert rows(pg, "c") == [(1, 42), (2, 7)]


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
    expected, report = _pg_erase(pg, ["tenant_id"])
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


@pytest.mark.parametrize("kept", [False, True], ids=["plain", "mentions-kept"])
def test_pg_anonymizing_a_referenced_key_is_refused(pg: TargetDB, kept: bool) -> None:
    """ON UPDATE CASCADE rewrote tenant 7's mention of alice's handle to NULL: another
    subject's row (or a kept one) changed, and the report said nothing."""
    pg.run(
        "CREATE TABLE users (id int PRIMARY KEY, tenant_id int, handle text UNIQUE)",
        "CREATE INDEX ON users (tenant_id)",
        "CREATE TABLE mentions (id int PRIMARY KEY,"
        " handle text REFERENCES users (handle) ON UPDATE CASCADE, tenant_id int)",
        "INSERT INTO users VALUES (1, 42, 'alice'), (2, 7, 'bob')",
        "INSERT INTO mentions VALUES (1, 'alice', 7), (2, 'bob', 7)",
    )
    policies = {"public.users": TablePolicy(action=TableAction.ANONYMIZE, set={"handle": None})}
    if kept:
        policies["public.mentions"] = TablePolicy(action=TableAction.KEEP)
    with pytest.raises(PolicyConflict, match=r"anonymizing handle would change the key"):
        build_plan(reflect(pg.engine), ["tenant_id"], policies)
    # Anonymizing a column nothing references still works.
    pg.run("ALTER TABLE users ADD COLUMN name text", "UPDATE users SET name = 'n' || id")
    other = {"public.users": TablePolicy(action=TableAction.ANONYMIZE, set={"name": "erased"})}
    plan = build_plan(reflect(pg.engine), ["tenant_id"], other)
    assert erase(pg.engine, plan, SUBJECT).verified
    assert rows(pg, "users") == [(1, 42, "alice", "erased"), (2, 7, "bob", "n2")]
    assert rows(pg, "mentions") == [(1, "alice", 7), (2, "bob", 7)]


@pytest.mark.parametrize("server_batches", [True, False], ids=["server", "client"])
@pytest.mark.parametrize("rule", ["CASCADE", "NO ACTION"])
def test_pg_shared_row_referenced_by_another_shared_row_is_not_orphaned(
    pg: TargetDB, rule: str, server_batches: bool
) -> None:
    """Tag 100, unlinked by the subject, is the parent of tenant 7's tag 200: it was
    deleted as an orphan and its CASCADE took tag 200 and tenant 7's link along (with
    NO ACTION, the links went and then the delete failed, for good)."""
    pg.run(
        "CREATE TABLE users (id int PRIMARY KEY, tenant_id int)",
        "CREATE INDEX ON users (tenant_id)",
        "CREATE TABLE tags (id int PRIMARY KEY,"
        f" parent_id int REFERENCES tags (id) ON DELETE {rule})",
        "CREATE INDEX ON tags (parent_id)",
        "CREATE TABLE user_tags (user_id int REFERENCES users (id),"
        " tag_id int REFERENCES tags (id) ON DELETE CASCADE, PRIMARY KEY (user_id, tag_id))",
        "CREATE INDEX ON user_tags (tag_id)",
        "INSERT INTO users VALUES (1, 42), (2, 7)",
        "INSERT INTO tags VALUES (100, NULL), (200, 100), (300, NULL)",
        "INSERT INTO user_tags VALUES (1, 100), (2, 200), (1, 300)",
    )
    policies = {
        "public.user_tags": TablePolicy(action=TableAction.UNLINK),
        "public.tags": TablePolicy(action=TableAction.DELETE_IF_ORPHANED),
    }
    plan = build_plan(reflect(pg.engine), ["tenant_id"], policies)
    expected = dry_run(pg.engine, plan, SUBJECT).total_rows
    options = ExecutionOptions(batch_size=1, server_batches=server_batches)
    report = erase(pg.engine, plan, SUBJECT, options)
    assert report.verified
    assert report.total_rows == expected == 4  # user 1, its two links, tag 300
    assert rows(pg, "user_tags") == [(2, 200)]
    assert rows(pg, "tags") == [(100, None), (200, 100)]
    assert rows(pg, "users") == [(2, 7)]


@pytest.mark.parametrize("server_batches", [True, False], ids=["server", "client"])
def test_pg_child_of_an_anonymized_row_with_a_null_subject_column_is_erased(
    pg: TargetDB, server_batches: bool
) -> None:
    """Order 12 has no tenant but belongs to the subject's user, who is anonymized: the
    dry run counted it, the erasure never removed it (it relied on the parent's delete
    failing for a row left behind, and an anonymized parent is not deleted), and every
    run ended unverified."""
    pg.run(
        "CREATE TABLE users (id int PRIMARY KEY, tenant_id int, email text)",
        "CREATE INDEX ON users (tenant_id)",
        "CREATE TABLE orders (id int PRIMARY KEY, user_id int REFERENCES users (id),"
        " tenant_id int)",
        "CREATE INDEX ON orders (user_id)",
        "CREATE INDEX ON orders (tenant_id)",
        "INSERT INTO users VALUES (1, 42, 'a@x'), (2, 7, 'b@x')",
        "INSERT INTO orders VALUES (10, 1, 42), (11, 2, 7), (12, 1, NULL)",
    )
    policies = {"public.users": TablePolicy(action=TableAction.ANONYMIZE, set={"email": "erased"})}
    plan = build_plan(reflect(pg.engine), ["tenant_id"], policies)
    expected = dry_run(pg.engine, plan, SUBJECT).total_rows
    report = erase(pg.engine, plan, SUBJECT, ExecutionOptions(server_batches=server_batches))
    assert report.verified
    assert report.total_rows == expected == 2
    assert rows(pg, "orders") == [(11, 2, 7)]
    assert rows(pg, "users") == [(1, 42, "erased"), (2, 7, "b@x")]


@pytest.mark.parametrize("db", ["postgresql", "mysql"], indirect=True)
def test_a_subject_that_is_none_of_an_enums_labels_matches_nothing(db: TargetDB) -> None:
    """PostgreSQL refused the statement (22P02): one service's enum failed the erasure
    of a value that service simply does not hold."""
    if db.backend == "postgresql":
        db.run("CREATE TYPE tier AS ENUM ('gold', 'silver')")
        column = "tier"
    else:
        column = "ENUM('gold', 'silver')"
    db.run(
        f"CREATE TABLE t (id int PRIMARY KEY, tenant {column})",
        "CREATE INDEX t_tenant ON t (tenant)",
        "INSERT INTO t VALUES (1, 'gold'), (2, 'silver')",
    )
    plan = build_plan(reflect(db.engine), ["tenant"])
    for subject in ("bronze", "GOLD"):
        assert dry_run(db.engine, plan, subject).total_rows == 0
        report = erase(db.engine, plan, subject)
        assert (report.total_rows, report.verified) == (0, True)
    assert erase(db.engine, plan, "gold").total_rows == 1
    assert rows(db, "t") == [(2, "silver")]


@pytest.mark.parametrize("fk_checks", ["auto", "database"])
@pytest.mark.parametrize("server_batches", [True, False], ids=["server", "client"])
@pytest.mark.parametrize("key", ["date", "timestamptz"])
def test_pg_infinite_date_keys_are_erased_and_their_references_found(
    pg: TargetDB, key: str, server_batches: bool, fk_checks: str
) -> None:
    """psycopg2 read 'infinity' as the year 9999 and sent that back: c(2) was left
    pointing at nothing, verified (or, batch by batch, the same row came back for ever).
    A real 9999-12-31 stays itself."""
    pg.run(
        f"CREATE TABLE p (k {key} PRIMARY KEY, tenant_id int)",
        "CREATE INDEX ON p (tenant_id)",
        f"CREATE TABLE c (id int PRIMARY KEY, k {key} REFERENCES p (k))",
        "CREATE INDEX ON c (k)",
        "INSERT INTO p VALUES ('2020-01-01', 42), ('infinity', 42), ('-infinity', 42),"
        " ('9999-12-31', 7), ('2021-01-01', 7)",
        "INSERT INTO c VALUES (1, '2020-01-01'), (2, 'infinity'), (3, '2021-01-01'),"
        " (4, '-infinity'), (5, '9999-12-31')",
    )
    plan = build_plan(reflect(pg.engine), ["tenant_id"])
    expected = dry_run(pg.engine, plan, SUBJECT).total_rows
    options = ExecutionOptions(batch_size=1, server_batches=server_batches, fk_checks=fk_checks)
    report = erase(pg.engine, plan, SUBJECT, options)
    assert report.verified
    assert report.total_rows == expected == 6
    assert [r[0] for r in rows(pg, "c")] == [3, 5]
    with pg.engine.connect() as conn:
        kept = conn.exec_driver_sql("SELECT k::date::text FROM p ORDER BY k").scalars().all()
    assert kept == ["2021-01-01", "9999-12-31"]


@pytest.mark.parametrize("server_batches", [True, False], ids=["server", "client"])
def test_pg_table_keyed_by_jsonb_is_walked_by_row_address(
    pg: TargetDB, server_batches: bool
) -> None:
    """A jsonb primary key gave TypeErrors (unhashable dict, dict > str) after some rows
    were gone. Its rows are named by ctid instead; a foreign key into it is refused."""
    pg.run(
        "CREATE TABLE docs (k jsonb PRIMARY KEY, tenant_id int)",
        "CREATE INDEX ON docs (tenant_id)",
        "CREATE TABLE notes (id int PRIMARY KEY, tenant_id int)",
        "CREATE INDEX ON notes (tenant_id)",
        """INSERT INTO docs VALUES ('{"a": 1}', 42), ('"x"', 42), ('[1, 2]', 42),"""
        """ ('{"a": 2}', 7)""",
        "INSERT INTO notes VALUES (1, 42), (2, 7)",
    )
    expected, report = _pg_erase(pg, ["tenant_id"], server_batches)
    assert report.verified
    assert report.total_rows == expected == 4
    assert rows(pg, "docs") == [({"a": 2}, 7)]
    pg.run(
        "CREATE TABLE refs (id int PRIMARY KEY, k jsonb REFERENCES docs (k))",
        "CREATE INDEX ON refs (k)",
    )
    with pytest.raises(UnsupportedTable, match=r"public\.refs: .* references k, whose values"):
        build_plan(reflect(pg.engine), ["tenant_id"])


def test_sqlite_subject_column_declared_nocase_or_rtrim_matches_exactly(
    sqlite_db: TargetDB,
) -> None:
    """A TEXT COLLATE NOCASE column took 'ACME' along with 'acme' (and RTRIM 'acme  '),
    as PostgreSQL's citext did: the subject is compared exactly everywhere."""
    sqlite_db.run(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, tenant TEXT COLLATE NOCASE)",
        "CREATE TABLE u (id INTEGER PRIMARY KEY, tenant VARCHAR(10) COLLATE RTRIM)",
        "CREATE INDEX t_tenant ON t (tenant)",
        "CREATE INDEX u_tenant ON u (tenant)",
        "INSERT INTO t VALUES (1, 'acme'), (2, 'ACME'), (3, 'other')",
        "INSERT INTO u VALUES (1, 'acme'), (2, 'acme  '), (3, 'other')",
    )
    plan = build_plan(reflect(sqlite_db.engine), ["tenant"])
    assert dry_run(sqlite_db.engine, plan, "acme").total_rows == 2
    report = erase(sqlite_db.engine, plan, "acme")
    assert (report.total_rows, report.verified) == (2, True)
    assert rows(sqlite_db, "t") == [(2, "ACME"), (3, "other")]
    assert rows(sqlite_db, "u") == [(2, "acme  "), (3, "other")]


# --- Second review, MariaDB and SQLite --------------------------------------------------


@pytest.mark.parametrize(
    ("key", "subject_keys", "other_keys"),
    [
        ("DOUBLE", ["0.30000000000000004", "1.00000000001", "1e300"], ["0.3", "1.0"]),
        ("TIME(3)", ["'-01:00:00'", "'100:00:00'", "'00:00:00.001'"], ["'23:00:00'", "'04:00:00'"]),
        # Not lossy before, and must stay right.
        ("SET('a', 'b', 'c')", ["'a,b'", "'a'"], ["'c'"]),
        ("DECIMAL(20, 10)", ["0.1234567891"], ["0.1234567890"]),
    ],
    ids=["double", "time", "set", "decimal"],
)
def test_mysql_keys_are_sent_back_as_the_driver_read_them(
    mysql: TargetDB, key: str, subject_keys: list[str], other_keys: list[str]
) -> None:
    """Read through SQLAlchemy's types, a DOUBLE key came back as a Decimal rounded to
    10 places and a TIME as a time of day: sent back, they named tenant 7's rows (0.3,
    23:00:00), which went, while the subject's stayed; through a unique key a child's
    CASCADE took tenant 7's child row and the report said verified."""
    mysql.run(
        f"CREATE TABLE p (id {key} PRIMARY KEY, tenant_id INT, KEY (tenant_id))",
        f"CREATE TABLE q (id INT PRIMARY KEY, code {key} NOT NULL UNIQUE, tenant_id INT,"
        " KEY (tenant_id))",
        f"CREATE TABLE c (id INT PRIMARY KEY, code {key}, note VARCHAR(10),"
        " FOREIGN KEY (code) REFERENCES q (code) ON DELETE CASCADE)",
        "INSERT INTO p VALUES "
        + ", ".join([*(f"({k}, 42)" for k in subject_keys), *(f"({k}, 7)" for k in other_keys)]),
        "INSERT INTO q VALUES "
        + ", ".join(
            f"({i}, {k}, {t})"
            for i, (k, t) in enumerate([(subject_keys[0], 42), (other_keys[0], 7)])
        ),
        f"INSERT INTO c VALUES (10, {subject_keys[0]}, 'of42'), (11, {other_keys[0]}, 'of7')",
    )
    before = {t: rows(mysql, t) for t in ("p", "q", "c")}
    plan = build_plan(reflect(mysql.engine), ["tenant_id"])
    expected = dry_run(mysql.engine, plan, SUBJECT).total_rows
    report = erase(mysql.engine, plan, SUBJECT, ExecutionOptions(batch_size=2))
    assert report.verified
    assert report.total_rows == expected == len(subject_keys) + 2
    assert rows(mysql, "p") == [r for r in before["p"] if r[1] == 7]
    assert rows(mysql, "q") == [r for r in before["q"] if r[2] == 7]
    assert rows(mysql, "c") == [r for r in before["c"] if r[2] == "of7"]


def test_mysql_float_key_is_not_used_to_name_rows(mysql: TargetDB) -> None:
    """A single-precision FLOAT never equals the literal it was written as (0.1 is
    stored as 0.100000001...): its leaf rows go by the subject's predicate alone; a key
    referenced by a foreign key is refused."""
    mysql.run(
        "CREATE TABLE p (id FLOAT PRIMARY KEY, tenant_id INT, KEY (tenant_id))",
        "INSERT INTO p VALUES (0.1, 42), (0.2, 7), (3.3333333, 42)",
    )
    plan = build_plan(reflect(mysql.engine), ["tenant_id"])
    report = erase(mysql.engine, plan, SUBJECT, ExecutionOptions(batch_size=1))
    assert (report.total_rows, report.verified) == (2, True)
    assert [r[1] for r in rows(mysql, "p")] == [7]
    mysql.run("CREATE TABLE c (id INT PRIMARY KEY, pid FLOAT, FOREIGN KEY (pid) REFERENCES p (id))")
    with pytest.raises(UnsupportedTable, match="MySQL FLOAT"):
        build_plan(reflect(mysql.engine), ["tenant_id"])


def test_mysql_char_subject_under_pad_char_to_full_length(mysql: TargetDB) -> None:
    """With PAD_CHAR_TO_FULL_LENGTH in the session, the exact comparison read '42   ':
    nothing matched, and the erasure reported verified with every row still there."""
    mysql.run(
        "CREATE TABLE p (id CHAR(6) PRIMARY KEY, tenant_id CHAR(5), KEY (tenant_id))",
        "CREATE TABLE c (id INT PRIMARY KEY, tenant_id CHAR(5), pid CHAR(6), KEY (tenant_id),"
        " FOREIGN KEY (pid) REFERENCES p (id) ON DELETE CASCADE)",
        "INSERT INTO p VALUES ('a', '42'), ('b', '7'), ('c', '42')",
        "INSERT INTO c VALUES (10, '42', 'a'), (11, '7', 'b'), (12, '42', 'c')",
    )
    url = sa.make_url(mysql.url).update_query_dict(
        {"init_command": "SET SESSION sql_mode = CONCAT(@@sql_mode, ',PAD_CHAR_TO_FULL_LENGTH')"}
    )
    engine = create_engine(url)
    try:
        plan = build_plan(reflect(engine), ["tenant_id"])
        assert dry_run(engine, plan, "42").total_rows == 4
        report = erase(engine, plan, "42", ExecutionOptions(batch_size=1))
    finally:
        engine.dispose()
    assert (report.total_rows, report.verified) == (4, True)
    assert rows(mysql, "p") == [("b", "7")]
    assert rows(mysql, "c") == [(11, "7", "b")]


def test_mysql_orphaned_shared_row_with_a_parent_reference(mysql: TargetDB) -> None:
    """Tag 103 (parent 100) is linked only by the subject: its delete read the parent
    column it had not fetched (KeyError) after a link was already gone."""
    mysql.run(
        "CREATE TABLE users (id INT PRIMARY KEY, tenant_id INT, KEY (tenant_id))",
        "CREATE TABLE tags (id INT PRIMARY KEY, parent_id INT,"
        " FOREIGN KEY (parent_id) REFERENCES tags (id) ON DELETE CASCADE)",
        "CREATE TABLE user_tags (user_id INT, tag_id INT, PRIMARY KEY (user_id, tag_id),"
        " FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,"
        " FOREIGN KEY (tag_id) REFERENCES tags (id) ON DELETE CASCADE)",
        "INSERT INTO users VALUES (1, 42), (2, 7)",
        "INSERT INTO tags VALUES (100, NULL), (103, 100), (104, NULL)",
        "INSERT INTO user_tags VALUES (1, 103), (2, 104), (1, 104)",
    )
    policies = {
        "user_tags": TablePolicy(action=TableAction.UNLINK),
        "tags": TablePolicy(action=TableAction.DELETE_IF_ORPHANED),
    }
    plan = build_plan(reflect(mysql.engine), ["tenant_id"], policies)
    expected = dry_run(mysql.engine, plan, SUBJECT).total_rows
    report = erase(mysql.engine, plan, SUBJECT, ExecutionOptions(batch_size=2))
    assert report.verified
    assert report.total_rows == expected == 4
    assert rows(mysql, "tags") == [(100, None), (104, None)]
    assert rows(mysql, "user_tags") == [(2, 104)]


@pytest.mark.parametrize(
    ("key", "subject_keys", "other_keys"),
    [
        (
            "DATETIME",
            ["'2020-01-01 00:00:00'", "'2020-01-02T00:00:00'"],
            ["'2020-01-01 00:00:00.000000'"],
        ),
        ("BOOLEAN", ["2"], ["1"]),
        ("NUMERIC", ["0.30000000000000004"], ["0.3"]),
        ("BLOB", ["'abc'", "'x'"], ["X'616263'"]),
    ],
    ids=["datetime", "boolean", "numeric", "blob-holding-text"],
)
def test_sqlite_keys_are_sent_back_as_stored(
    sqlite_db: TargetDB, key: str, subject_keys: list[str], other_keys: list[str]
) -> None:
    """SQLAlchemy re-formatted a WITHOUT ROWID table's DATETIME key (and read BOOLEAN 2
    as True, NUMERIC as a rounded Decimal, text in a BLOB column as unsendable):
    tenant 7's row went, the subject's stayed, or every erasure failed."""
    values = [*(f"({k}, 42)" for k in subject_keys), *(f"({k}, 7)" for k in other_keys)]
    sqlite_db.run(
        f"CREATE TABLE p (id {key} PRIMARY KEY, tenant_id INT) WITHOUT ROWID",
        "CREATE INDEX p_tenant ON p (tenant_id)",
        f"INSERT INTO p VALUES {', '.join(values)}",
    )
    plan = build_plan(reflect(sqlite_db.engine), ["tenant_id"])
    expected = dry_run(sqlite_db.engine, plan, SUBJECT).total_rows
    report = erase(sqlite_db.engine, plan, SUBJECT, ExecutionOptions(batch_size=1))
    assert report.verified
    assert report.total_rows == expected == len(subject_keys)
    with sqlite_db.engine.connect() as conn:
        left = conn.exec_driver_sql("SELECT tenant_id FROM p").scalars().all()
    assert left == [7] * len(other_keys)
