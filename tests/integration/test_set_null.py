"""``ON DELETE SET NULL`` references: cleared as the database would, with a column list,
and never clearing the subject's own rows instead of removing them.
"""

from __future__ import annotations

import pytest

from tests.conftest import TargetDB
from tests.integration.outcomes import pg_erase, rows


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
    expected, report = pg_erase(pg, ["users.tenant_id"], server_batches)
    assert report.verified
    assert report.total_rows == expected == 1
    assert rows(pg, "posts") == [(10, 42, None), (11, 7, 2)]
    assert rows(pg, "users") == [(7, 2)]


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
    expected, report = pg_erase(pg, ["p.tenant_id", "z.tenant_id"], server_batches)
    assert report.verified
    assert report.total_rows == expected == 3
    assert rows(pg, "z") == [(2, 7, 2, "x")]
