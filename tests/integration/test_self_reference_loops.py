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
