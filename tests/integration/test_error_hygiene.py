"""What the engine's errors say: never a subject's value, never a DSN.

The drivers quote key values in a foreign-key violation's detail, and SQLAlchemy quotes
the statement with its parameters (the server loop's ``DO`` block carries the subject
as a literal). Callers of the Python API log ``str(exc)`` and tracebacks, so the engine
raises ``DatabaseFailure`` with the fault's safe description instead.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
import sqlalchemy as sa

from api.cli import EXIT_ERROR, main
from tests.conftest import TargetDB
from worker.catalog.reflection import reflect
from worker.database import create_engine
from worker.exceptions import DatabaseUnavailable
from worker.execution.erasure import erase
from worker.execution.options import ExecutionOptions
from worker.faults import DatabaseFailure, FaultKind, classify
from worker.planning.building import build_plan

SUBJECT_EMAIL = "subject-7f3a9c@example.org"


def _audited_accounts(pg: TargetDB) -> None:
    """Deleting an account makes a trigger insert an audit row referencing it, so the
    delete always fails with a foreign-key violation whose detail quotes the key."""
    pg.run(
        "CREATE TABLE accounts (email text PRIMARY KEY, name text)",
        "CREATE TABLE audit (id serial PRIMARY KEY, account text REFERENCES accounts (email),"
        " note text)",
        "CREATE INDEX ON audit (account)",
        "CREATE FUNCTION audit_delete() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN INSERT INTO audit (account, note) VALUES (OLD.email, 'deleted');"
        " RETURN OLD; END $$",
        "CREATE TRIGGER audit_delete BEFORE DELETE ON accounts"
        " FOR EACH ROW EXECUTE FUNCTION audit_delete()",
        f"INSERT INTO accounts VALUES ('{SUBJECT_EMAIL}', 'Ada'), ('other@example.org', 'Bob')",
    )


def _everything_said(exc: BaseException) -> str:
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


@pytest.mark.parametrize("server_batches", [True, False], ids=["server", "client"])
def test_a_database_error_names_its_code_not_the_subject(
    pg: TargetDB, server_batches: bool
) -> None:
    _audited_accounts(pg)
    plan = build_plan(reflect(pg.engine), ["email"])
    options = ExecutionOptions(batch_size=10, server_batches=server_batches)
    with pytest.raises(DatabaseFailure) as failed:
        erase(pg.engine, plan, SUBJECT_EMAIL, options)
    failure = failed.value
    assert failure.code == "23503"
    assert not failure.transient
    assert str(failure) == "foreign-key violation (SQLSTATE 23503)"
    assert SUBJECT_EMAIL not in _everything_said(failure)
    # The driver's own error does quote it: what the wrapping keeps out of sight.
    assert isinstance(failure.driver_error, sa.exc.IntegrityError)
    assert SUBJECT_EMAIL in str(failure.driver_error)
    # The task layer sorts it as it sorted SQLAlchemy's error.
    assert classify(failure) == classify(failure.driver_error)
    assert classify(failure).kind is FaultKind.PERMANENT
    with pg.engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT email FROM accounts ORDER BY 1")).scalars().all()
        audit = conn.execute(sa.text("SELECT count(*) FROM audit")).scalar_one()
    assert kept == ["other@example.org", SUBJECT_EMAIL]
    assert audit == 0


def test_the_cli_reports_it_in_one_line_without_the_subject(
    pg: TargetDB, capsys: pytest.CaptureFixture[str]
) -> None:
    _audited_accounts(pg)
    url = pg.engine.url.render_as_string(hide_password=False)
    argv = ["erase", "--db", url, "--subject-column", "email", "--subject", SUBJECT_EMAIL]
    assert main([*argv, "--yes", "--quiet"]) == EXIT_ERROR
    out, err = capsys.readouterr()
    assert SUBJECT_EMAIL not in out + err
    assert err.strip() == "eraser: error: foreign-key violation (SQLSTATE 23503)"


def test_a_lost_lock_is_transient(pg: TargetDB) -> None:
    """A lock timeout comes out as a transient ``DatabaseFailure`` the tasks retry."""
    pg.run(
        "CREATE TABLE notes (id int PRIMARY KEY, owner text)",
        "CREATE INDEX ON notes (owner)",
        f"INSERT INTO notes VALUES (1, '{SUBJECT_EMAIL}'), (2, 'x')",
    )
    plan = build_plan(reflect(pg.engine), ["owner"])
    with pg.engine.connect() as holder, holder.begin():
        holder.execute(sa.text("SELECT 1 FROM notes WHERE id = 1 FOR UPDATE"))
        options = ExecutionOptions(batch_size=10, lock_timeout_ms=200)
        with pytest.raises(DatabaseFailure) as failed:
            erase(pg.engine, plan, SUBJECT_EMAIL, options)
    assert failed.value.code == "55P03"
    assert failed.value.transient
    assert classify(failed.value).kind is FaultKind.TRANSIENT
    assert SUBJECT_EMAIL not in _everything_said(failed.value)


def test_a_missing_sqlite_file_is_refused_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "servce.db"
    with pytest.raises(DatabaseUnavailable, match="no such database file"):
        create_engine(f"sqlite:///{typo}", existing=True)
    argv = ["erase", "--db", f"sqlite:///{typo}", "--subject-column", "t", "--subject", "1"]
    assert main([*argv, "--yes"]) == EXIT_ERROR
    assert "no such database file" in capsys.readouterr().err
    assert not typo.exists()
    # The job store's engine may still create its file.
    create_engine(f"sqlite:///{typo}").dispose()
