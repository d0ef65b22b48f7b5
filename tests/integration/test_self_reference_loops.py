"""Issue 20: rows of one batch that reference each other round a nullable
self-reference (``a.up -> b``, ``b.up -> a``) on the databases that remove a batch
leaves first (MySQL checks row by row; SQLite's cascade would go uncounted): the
batch has no leaf, and the erasure used to stop there with some batches committed.
The loop's references are cleared in the batch's transaction, as the database's own
cascade would remove the rows regardless.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TargetDB, make_db
from tests.differential.erasure import DEFAULT_BATCH, erase_subject
from tests.differential.sql_case import run, tables
from worker.exceptions import UnsatisfiablePlan


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TargetDB]:
    yield from make_db(request.param, tmp_path)


@pytest.mark.parametrize("batch_size", [1, DEFAULT_BATCH])
def test_a_loop_through_a_nullable_self_reference(target: TargetDB, batch_size: int) -> None:
    run(
        target.url,
        [
            "CREATE TABLE nodes (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL,"
            " up_id INTEGER REFERENCES nodes (id))",
            "CREATE INDEX ix_nodes_tenant ON nodes (tenant_id)",
            "CREATE INDEX ix_nodes_up ON nodes (up_id)",
            "INSERT INTO nodes VALUES (1, 1, NULL), (2, 1, NULL), (3, 1, NULL), (4, 2, NULL)",
            "UPDATE nodes SET up_id = 2 WHERE id = 1",
            "UPDATE nodes SET up_id = 1 WHERE id = 2",
            "UPDATE nodes SET up_id = 2 WHERE id = 3",
        ],
    )
    report = erase_subject(target.url, ["tenant_id"], 1, batch_size)
    assert tables(target.url, ["nodes"]) == {"nodes": [(4, 2, None)]}
    assert report.total_rows == 3


def _checks_off(target: TargetDB) -> str:
    """A statement that lets the session insert rows whose references loop."""
    return {
        "mysql": "SET FOREIGN_KEY_CHECKS = 0",
        "sqlite": "PRAGMA foreign_keys = OFF",
    }.get(target.backend, "SET session_replication_role = replica")


@pytest.mark.parametrize("batch_size", [1, DEFAULT_BATCH])
def test_a_loop_through_a_not_null_self_reference(target: TargetDB, batch_size: int) -> None:
    """``1.up = 2``, ``2.up = 1`` through a NOT NULL self-reference, with a root
    pointing at itself (3), rows below the loop (5) and below the root (0, 4). Row 0
    goes in the first batch. MySQL cannot defer the check: it used to remove row 0 and
    then refuse (half-erased); now the pre-flight refuses before any write. SQLite
    defers the check for the batch (it refused a loop inside one batch); PostgreSQL
    checks at the statement's end."""
    run(
        target.url,
        [
            "CREATE TABLE nodes (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL,"
            " up_id INTEGER NOT NULL REFERENCES nodes (id))",
            "CREATE INDEX ix_nodes_up ON nodes (up_id)",
            _checks_off(target),
            "INSERT INTO nodes VALUES (0, 1, 3), (1, 1, 2), (2, 1, 1), (3, 1, 3), (4, 1, 3),"
            " (5, 1, 2), (9, 2, 9)",
        ],
    )
    before = tables(target.url, ["nodes"])
    if target.backend == "mysql":
        with pytest.raises(UnsatisfiablePlan, match="reference each other round"):
            erase_subject(target.url, ["tenant_id"], 1, batch_size)
        assert tables(target.url, ["nodes"]) == before
        return
    report = erase_subject(target.url, ["tenant_id"], 1, batch_size)
    assert tables(target.url, ["nodes"]) == {"nodes": [(9, 2, 9)]}
    assert report.total_rows == 6


def test_a_tree_under_a_not_null_self_reference_is_not_a_loop(target: TargetDB) -> None:
    """The pre-flight's loop check lets a plain tree through (roots pointing at
    themselves)."""
    run(
        target.url,
        [
            "CREATE TABLE nodes (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL,"
            " up_id INTEGER NOT NULL REFERENCES nodes (id))",
            "CREATE INDEX ix_nodes_up ON nodes (up_id)",
            _checks_off(target),
            "INSERT INTO nodes VALUES (1, 1, 1), (2, 1, 1), (3, 1, 2), (4, 1, 2), (9, 2, 9)",
        ],
    )
    report = erase_subject(target.url, ["tenant_id"], 1, 1)
    assert tables(target.url, ["nodes"]) == {"nodes": [(9, 2, 9)]}
    assert report.total_rows == 4
