"""Table policies: shared rows removed only once orphaned, anonymized rows and what
references them, and anonymize policies refused when they would rewrite a key.
"""

from __future__ import annotations

import pytest

from models.erasure import TableAction, TablePolicy
from tests.conftest import TargetDB
from tests.integration.outcomes import SUBJECT, rows
from worker.catalog.reflection import reflect
from worker.exceptions import (
    PolicyConflict,
)
from worker.execution.erasure import dry_run, erase
from worker.execution.options import ExecutionOptions
from worker.planning.building import build_plan


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
