"""The subject's value: converted to each column's type, refused when it does not fit,
and matched exactly whatever the column's character set, collation or type.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
from typing import Any

import pytest
import sqlalchemy as sa

from api.cli import EXIT_ERROR, EXIT_NOTHING_MATCHED, EXIT_OK, main
from tests.conftest import TargetDB
from tests.integration.outcomes import Rows, rows
from worker.catalog.reflection import reflect
from worker.database import create_engine
from worker.execution.erasure import dry_run, erase
from worker.execution.options import ExecutionOptions
from worker.planning.building import build_plan
from worker.planning.subjects import coerce_subject

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
    """No integer column holds it (and SQLite's driver cannot even send it): nothing to
    erase, as in the quick check; no traceback (it was an ``OverflowError``)."""
    before = _accounts(accounts_url)
    subject = "99999999999999999999999"
    argv = ["erase", "--db", accounts_url, "--subject-column", "tenant_id", "--subject", subject]
    for dry in (True, False):
        mode = ["--dry-run"] if dry else ["--yes"]
        assert main([*argv, "--json", *mode]) == EXIT_NOTHING_MATCHED
        out, err = capsys.readouterr()
        assert err == ""
        report = json.loads(out)
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


TYPES = {"citext": "citext", "collation": "text COLLATE ci"}


CI_COLLATION = (
    "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)"
)


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
