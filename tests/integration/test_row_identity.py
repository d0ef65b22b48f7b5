"""How the engine names rows (``worker.dialects.rows``): keys read and sent back as the
driver gives them, row addresses for tables without a usable key, and tables refused
when neither will do.
"""

from __future__ import annotations

import pytest

from tests.conftest import TargetDB
from tests.integration.outcomes import SUBJECT, dump, pg_erase, rows
from worker.catalog.reflection import reflect
from worker.exceptions import (
    UnsupportedTable,
)
from worker.execution.erasure import dry_run, erase
from worker.execution.options import ExecutionOptions
from worker.planning.building import build_plan


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
    expected, report = pg_erase(pg, ["tenant_id"], server_batches)
    assert report.verified
    assert report.total_rows == expected == 4
    assert rows(pg, "docs") == [({"a": 2}, 7)]
    pg.run(
        "CREATE TABLE refs (id int PRIMARY KEY, k jsonb REFERENCES docs (k))",
        "CREATE INDEX ON refs (k)",
    )
    with pytest.raises(UnsupportedTable, match=r"public\.refs: .* references k, whose values"):
        build_plan(reflect(pg.engine), ["tenant_id"])


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
