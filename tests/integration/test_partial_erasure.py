"""Issue 20: a walk that fails after some of its batches committed says that the
subject is partially erased, and what was written, in the failure it raises.

A trigger refuses the removal of one row: at batch size 1 the batches before it
commit, then the erasure fails.
"""

from __future__ import annotations

import pytest

from models.erasure import TableAction
from tests.conftest import TargetDB
from tests.differential.erasure import erase_subject
from tests.differential.sql_case import run, tables
from worker.execution.partial import written_before
from worker.faults import DatabaseFailure, classify

SCHEMA = {
    "sqlite": [
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL)",
        "CREATE TRIGGER keep_three BEFORE DELETE ON notes WHEN old.id = 3"
        " BEGIN SELECT RAISE(ABORT, 'kept'); END",
    ],
    "postgresql": [
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL)",
        "CREATE FUNCTION keep_three() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN IF old.id = 3 THEN RAISE EXCEPTION 'kept'; END IF; RETURN old; END $$",
        "CREATE TRIGGER keep_three BEFORE DELETE ON notes FOR EACH ROW"
        " EXECUTE FUNCTION keep_three()",
    ],
    "mysql": [
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL)",
        "CREATE TRIGGER keep_three BEFORE DELETE ON notes FOR EACH ROW"
        " BEGIN IF OLD.id = 3 THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'kept'; END IF;"
        " END",
    ],
}
FIXTURES = {"sqlite": "sqlite_db", "postgresql": "pg", "mysql": "mysql"}
DATA = [
    "CREATE INDEX ix_notes_tenant ON notes (tenant_id)",
    "INSERT INTO notes VALUES (1, 1), (2, 1), (3, 1), (4, 1), (5, 2)",
]


@pytest.mark.parametrize("engine", sorted(FIXTURES))
def test_failure_midway_names_what_was_written(request: pytest.FixtureRequest, engine: str) -> None:
    db: TargetDB = request.getfixturevalue(FIXTURES[engine])
    run(db.url, SCHEMA[engine] + DATA)
    with pytest.raises(DatabaseFailure) as failed:
        erase_subject(db.url, ["tenant_id"], 1, 1)
    assert [r[0] for r in tables(db.url, ["notes"])["notes"]] == [3, 4, 5]
    written = written_before(failed.value)
    assert [(o.table.rsplit(".", 1)[-1], o.action, o.rows) for o in written] == [
        ("notes", TableAction.DELETE, 2)
    ]
    assert "partially erased: 2 rows written" in str(failed.value)
    assert "partially erased" in classify(failed.value).description


@pytest.mark.parametrize("engine", sorted(FIXTURES))
def test_failure_before_any_write_says_nothing_of_it(
    request: pytest.FixtureRequest, engine: str
) -> None:
    db: TargetDB = request.getfixturevalue(FIXTURES[engine])
    run(db.url, SCHEMA[engine] + DATA)
    run(db.url, ["UPDATE notes SET tenant_id = 2 WHERE id IN (1, 2)"])
    with pytest.raises(DatabaseFailure) as failed:
        erase_subject(db.url, ["tenant_id"], 1, 1)
    assert written_before(failed.value) == []
    assert "partially erased" not in str(failed.value)
