"""The one-database CLI on SQLite: plan, dry run, erase, and its errors."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from api.cli import EXIT_ERROR, EXIT_OK, main, parse_policy
from models.erasure import TableAction
from worker.database import redact
from worker.exceptions import EraserError

SCHEMA = """
CREATE TABLE tenants (id INTEGER PRIMARY KEY, name TEXT);
CREATE TABLE "Order" (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants(id));
CREATE INDEX order_tenant ON "Order"(tenant_id);
CREATE TABLE "order line" (id INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL REFERENCES "Order"(id) ON DELETE CASCADE, qty INTEGER);
CREATE INDEX line_order ON "order line"(order_id);
CREATE TABLE notes (id INTEGER PRIMARY KEY, order_id INTEGER REFERENCES "Order"(id)
    ON DELETE SET NULL, body TEXT);
"""


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    path = tmp_path / "estate.db"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.executemany("INSERT INTO tenants VALUES (?, ?)", [(1, "a"), (2, "b")])
    conn.executemany('INSERT INTO "Order" VALUES (?, ?)', [(i, 1 + i % 2) for i in range(1, 21)])
    conn.executemany(
        'INSERT INTO "order line" VALUES (?, ?, ?)',
        [(i, 1 + i % 20, 1) for i in range(1, 101)],
    )
    conn.executemany("INSERT INTO notes VALUES (?, ?, ?)", [(i, i, "n") for i in range(1, 21)])
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


def count(url: str, sql: str) -> int:
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


ARGS = ["--subject-column", "tenant_id", "--subject-column", "tenants.id", "--subject", "1"]


def test_plan_json_lists_children_first(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "--db", sqlite_url, *ARGS, "--json"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    tables = [s["table"] for s in doc["steps"]]
    assert (
        tables.index("main.order line") < tables.index("main.Order") < tables.index("main.tenants")
    )
    assert doc["schema_fingerprint"].startswith("sha256:")
    nullify = [s for s in doc["steps"] if s["action"] == "nullify"]
    assert [s["table"] for s in nullify] == ["main.notes"]


def test_plan_text_is_readable(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--db", sqlite_url, *ARGS]) == EXIT_OK
    out = capsys.readouterr().out
    assert "main.order line" in out
    assert "anchor" in out


def test_dry_run_counts_exactly_and_writes_nothing(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["erase", "--db", sqlite_url, *ARGS, "--dry-run", "--json"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["dry_run"] is True
    rows = {(t["table"], t["action"]): t["rows"] for t in doc["tables"]}
    assert rows[("main.Order", "delete")] == 10
    assert rows[("main.order line", "delete")] == 50
    assert rows[("main.tenants", "delete")] == 1
    assert rows[("main.notes", "nullify")] == 10
    assert doc["total_rows"] == 61
    assert count(sqlite_url, 'SELECT count(*) FROM "order line"') == 100

    argv = ["erase", "--db", sqlite_url, *ARGS, "--json", "--batch-size", "7", "--yes"]
    assert main(argv) == EXIT_OK
    done = json.loads(capsys.readouterr().out)
    assert done["verified"] is True
    assert done["total_rows"] == doc["total_rows"]
    assert count(sqlite_url, 'SELECT count(*) FROM "order line"') == 50
    assert count(sqlite_url, 'SELECT count(*) FROM "Order" WHERE tenant_id = 1') == 0
    assert count(sqlite_url, "SELECT count(*) FROM notes WHERE order_id IS NULL") == 10
    assert count(sqlite_url, "SELECT count(*) FROM notes") == 20


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # an unknown subject column
        (["--subject-column", "nope", "--subject", "1"], "no table has the subject column"),
        # a subject value that does not fit an integer column
        (["--subject-column", "tenant_id", "--subject", "abc"], "not a valid int"),
        # a policy on a table that does not exist
        (
            ["--subject-column", "tenant_id", "--subject", "1", "--policy", "ghost=keep"],
            "names table 'ghost'",
        ),
        # a policy with an unknown action
        (
            ["--subject-column", "tenant_id", "--subject", "1", "--policy", "notes=shred"],
            "unknown action",
        ),
    ],
)
def test_bad_input_is_one_line_and_nonzero(
    sqlite_url: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["erase", "--db", sqlite_url, "--dry-run", *argv]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("eraser: error: ")
    assert err.count("\n") == 1
    assert message in err
    assert "Traceback" not in err


def test_kept_table_blocking_refuses(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["erase", "--db", sqlite_url, *ARGS, "--policy", "order line=keep", "--yes"]
    assert main(argv) == EXIT_ERROR
    assert "kept table main.order line" in capsys.readouterr().err
    assert count(sqlite_url, 'SELECT count(*) FROM "Order"') == 20


def test_unreachable_database_hides_the_password() -> None:
    url = "postgresql://eraser:s3cret-pw@127.0.0.1:1/nowhere"
    proc = subprocess.run(
        [sys.executable, "-m", "api.cli", "plan", "--db", url, *ARGS],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == EXIT_ERROR
    assert proc.stderr.startswith(
        "eraser: error: cannot connect to postgresql+psycopg2://eraser:***@"
    )
    assert "s3cret-pw" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://eraser@127.0.0.1:1/nowhere?password=s3cret-pw",
        "postgresql://eraser@127.0.0.1:1/nowhere?sslmode=disable&PASSWORD=s3cret-pw",
        "postgresql+psycopg://eraser@127.0.0.1:1/nowhere?password=s3cret-pw",
    ],
    ids=["query", "query-upper-case", "unknown-driver"],
)
def test_a_password_given_as_a_query_parameter_is_hidden_too(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """libpq takes ``?password=``; only the ``user:password@`` form was hidden."""
    assert main(["plan", "--db", url, *ARGS]) == EXIT_ERROR
    out, err = capsys.readouterr()
    assert "s3cret-pw" not in out + err
    assert err.startswith("eraser: error: cannot connect to ")
    assert "=***" in err
    assert redact(url).count("***") == 1
    assert "s3cret-pw" not in redact(url)


def test_db_env_reads_the_url_from_the_environment(
    sqlite_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERS_DATABASE_URL", sqlite_url)
    assert main(["erase", "--db-env", "ORDERS_DATABASE_URL", *ARGS, "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_rows"] == 61
    monkeypatch.delenv("ORDERS_DATABASE_URL")
    assert main(["plan", "--db-env", "ORDERS_DATABASE_URL", *ARGS]) == EXIT_ERROR
    assert "environment variable is not set" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "action", "values"),
    [
        ("customers=keep", TableAction.KEEP, {}),
        ("links=unlink", TableAction.UNLINK, {}),
        (
            "customers=anonymize:email=null,name=erased,age=0",
            TableAction.ANONYMIZE,
            {"email": None, "name": "erased", "age": 0},
        ),
    ],
)
def test_parse_policy(text: str, action: TableAction, values: dict[str, object]) -> None:
    table, policy = parse_policy(text)
    assert table == text.split("=", maxsplit=1)[0]
    assert policy.action is action
    assert policy.set == values


def test_parse_policy_rejects_garbage() -> None:
    with pytest.raises(EraserError, match="expected TABLE=ACTION"):
        parse_policy("customers")
