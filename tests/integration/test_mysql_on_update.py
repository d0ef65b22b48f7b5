"""Issue 20, defect 3: clearing a reference on MariaDB must not rewrite other
subjects' ``ON UPDATE CURRENT_TIMESTAMP`` columns.

The database's own ``ON DELETE SET NULL`` leaves ``last_update`` as it was; Eraser
clears such references with an UPDATE, which fires the column's ON UPDATE clause.
"""

from __future__ import annotations

import pytest

from tests.conftest import TargetDB
from tests.differential.erasure import erase_subject
from tests.differential.sql_case import run, tables

SCHEMA = [
    "CREATE TABLE stores (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL,"
    " KEY (tenant_id)) ENGINE=InnoDB",
    "CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL,"
    " favourite_store_id INTEGER NULL,"
    " last_update TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,"
    " KEY (tenant_id), KEY (favourite_store_id),"
    " FOREIGN KEY (favourite_store_id) REFERENCES stores (id) ON DELETE SET NULL) ENGINE=InnoDB",
]
STAMP = "2006-02-15 04:57:20"
DATA = [
    "INSERT INTO stores VALUES (1, 1), (2, 2)",
    # Customers of tenant 2 whose favourite store is tenant 1's: their reference is
    # cleared, their last_update must not move.
    f"INSERT INTO customers VALUES (10, 1, 1, '{STAMP}'), (20, 2, 1, '{STAMP}'),"
    f" (21, 2, 1, '{STAMP}'), (22, 2, 2, '{STAMP}')",
]


@pytest.mark.mysql
@pytest.mark.parametrize("batch_size", [1, 2000])
def test_cleared_reference_keeps_the_timestamp(mysql: TargetDB, batch_size: int) -> None:
    run(mysql.url, SCHEMA + DATA)
    erase_subject(mysql.url, ["tenant_id"], 1, batch_size)
    after = tables(mysql.url, ["stores", "customers"])
    assert [r[0] for r in after["stores"]] == [2]
    assert [(r[0], r[1], r[2], str(r[3])) for r in after["customers"]] == [
        (20, 2, None, STAMP),
        (21, 2, None, STAMP),
        (22, 2, 2, STAMP),
    ]
