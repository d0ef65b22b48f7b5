"""Issue 20, defect 1: foreign keys declared on partitions, not on the partitioned
parent (PostgreSQL).

``payments`` is partitioned by month; each partition carries ``REFERENCES rentals``,
``customers`` and ``staff``, the parent none (schemas that predate parent-level keys,
or built by partition managers). Erasing a customer must take their payments too,
the dry run must count them, and another customer's payment in a partition that
references this customer's rental must be refused before anything is written.
"""

from __future__ import annotations

from datetime import date

import pytest

from models.erasure import TableAction
from tests.conftest import TargetDB
from tests.differential.erasure import erase_subject
from tests.differential.sql_case import run, tables
from worker.exceptions import CrossSubjectReference

SCHEMA = [
    "CREATE TABLE staff (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
    "CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
    "CREATE TABLE rentals (id INTEGER PRIMARY KEY,"
    " customer_id INTEGER NOT NULL REFERENCES customers (customer_id),"
    " staff_id INTEGER NOT NULL REFERENCES staff (id))",
    "CREATE INDEX ON rentals (customer_id)",
    "CREATE INDEX ON rentals (staff_id)",
    "CREATE TABLE payments (id INTEGER NOT NULL, customer_id INTEGER NOT NULL,"
    " rental_id INTEGER, staff_id INTEGER NOT NULL, paid DATE NOT NULL,"
    " PRIMARY KEY (id, paid)) PARTITION BY RANGE (paid)",
    "CREATE INDEX ON payments (customer_id)",
    "CREATE INDEX ON payments (rental_id)",
    "CREATE INDEX ON payments (staff_id)",
]
MONTHS = (("2024_01", "2024-01-01", "2024-02-01"), ("2024_02", "2024-02-01", "2024-03-01"))
for _month, _low, _high in MONTHS:
    SCHEMA += [
        f"CREATE TABLE payments_{_month} PARTITION OF payments"
        f" FOR VALUES FROM ('{_low}') TO ('{_high}')",
        f"ALTER TABLE payments_{_month} ADD FOREIGN KEY (customer_id)"
        " REFERENCES customers (customer_id)",
        f"ALTER TABLE payments_{_month} ADD FOREIGN KEY (rental_id) REFERENCES rentals (id)",
        f"ALTER TABLE payments_{_month} ADD FOREIGN KEY (staff_id) REFERENCES staff (id)",
    ]

DATA = [
    "INSERT INTO staff VALUES (1, 'Mike'), (2, 'Jon')",
    "INSERT INTO customers VALUES (1, 'Mary'), (2, 'Patricia')",
    "INSERT INTO rentals VALUES (10, 1, 1), (11, 1, 2), (20, 2, 1)",
    "INSERT INTO payments VALUES (100, 1, 10, 1, '2024-01-05'), (101, 1, 11, 2, '2024-02-07'),"
    " (102, 1, NULL, 1, '2024-02-09'), (200, 2, 20, 2, '2024-01-06')",
]
TABLES = ("staff", "customers", "rentals", "payments")
#: What erasing customer 1 leaves (the cascade oracle's rows).
AFTER = {
    "staff": [(1, "Mike"), (2, "Jon")],
    "customers": [(2, "Patricia")],
    "rentals": [(20, 2, 1)],
}
_WRONG = "issue 20: foreign keys declared on partitions are not in the graph"


@pytest.mark.postgres
@pytest.mark.parametrize("batch_size", [1, 2000])
def test_erasure_takes_the_payments_in_every_partition(pg: TargetDB, batch_size: int) -> None:
    run(pg.url, SCHEMA + DATA)
    before = tables(pg.url, TABLES)
    try:
        report = erase_subject(pg.url, ["customer_id"], 1, batch_size)
    finally:
        after = tables(pg.url, TABLES)
        assert after["customers"] in (before["customers"], AFTER["customers"]), "half-erased"
    assert {t: after[t] for t in AFTER} == AFTER
    assert [row[0] for row in after["payments"]] == [200]
    deleted = {o.table: o.rows for o in report.tables if o.action is TableAction.DELETE}
    assert deleted == {"public.customers": 1, "public.rentals": 2, "public.payments": 3}


@pytest.mark.postgres
def test_dry_run_counts_the_payments(pg: TargetDB) -> None:
    # The subject is named on customers only: rentals and payments are reached by keys.
    run(pg.url, SCHEMA + DATA)
    report = erase_subject(pg.url, ["customers.customer_id"], 1, count_only=True)
    deleted = {o.table: o.rows for o in report.tables if o.action is TableAction.DELETE}
    assert deleted.get("public.payments") == 3
    assert report.total_rows == 6


@pytest.mark.postgres
def test_another_customers_payment_in_a_partition_is_refused_before_writing(
    pg: TargetDB,
) -> None:
    # Customer 2 paid for customer 1's rental: erasing customer 1 would take it.
    run(pg.url, [*SCHEMA, *DATA, "INSERT INTO payments VALUES (201, 2, 10, 1, '2024-02-11')"])
    before = tables(pg.url, TABLES)
    with pytest.raises(CrossSubjectReference):
        erase_subject(pg.url, ["customer_id"], 1, 1)
    assert tables(pg.url, TABLES) == before


@pytest.mark.postgres
def test_partition_key_never_leaves_the_subject_half_erased(pg: TargetDB) -> None:
    """Found by the differential test (shrunk): at batch size 1 the first batch of
    ``t3`` commits, the second fails with 23503 on the partition's key."""
    run(
        pg.url,
        [
            "CREATE TABLE t3 (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL)",
            "CREATE TABLE t4 (id INTEGER NOT NULL PRIMARY KEY, tenant_id INTEGER NOT NULL,"
            " t3_id INTEGER) PARTITION BY RANGE (id)",
            "CREATE TABLE t4_p0 PARTITION OF t4 FOR VALUES FROM (MINVALUE) TO (4)",
            "CREATE TABLE t4_p1 PARTITION OF t4 FOR VALUES FROM (4) TO (MAXVALUE)",
            "ALTER TABLE t4_p0 ADD FOREIGN KEY (t3_id) REFERENCES t3 (id)",
            "ALTER TABLE t4_p1 ADD FOREIGN KEY (t3_id) REFERENCES t3 (id)",
            "CREATE INDEX ON t3 (tenant_id)",
            "CREATE INDEX ON t4 (tenant_id)",
            "CREATE INDEX ON t4 (t3_id)",
            "INSERT INTO t3 VALUES (2, 1), (5, 1)",
            "INSERT INTO t4 VALUES (4, 1, 5)",
        ],
    )
    before = tables(pg.url, ["t3", "t4"])
    try:
        erase_subject(pg.url, ["tenant_id"], 1, 1)
    finally:
        after = tables(pg.url, ["t3", "t4"])
        assert after in (before, {"t3": [], "t4": []}), f"half-erased: {after}"
    assert after == {"t3": [], "t4": []}


@pytest.mark.postgres
def test_another_subjects_row_cascading_from_a_partition_is_refused(pg: TargetDB) -> None:
    """Found by the differential test (shrunk): tenant 2's row in a partition
    references tenant 1's row ``ON DELETE CASCADE``; the database's cascade would take
    another subject's row, the dry run does not see it."""
    run(
        pg.url,
        [
            "CREATE TABLE t1 (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL)",
            "CREATE TABLE t5 (id INTEGER NOT NULL PRIMARY KEY, tenant_id INTEGER NOT NULL,"
            " t1_id INTEGER NOT NULL) PARTITION BY RANGE (id)",
            "CREATE TABLE t5_p0 PARTITION OF t5 FOR VALUES FROM (MINVALUE) TO (4)",
            "CREATE TABLE t5_p1 PARTITION OF t5 FOR VALUES FROM (4) TO (MAXVALUE)",
            "ALTER TABLE t5_p0 ADD FOREIGN KEY (t1_id) REFERENCES t1 (id) ON DELETE CASCADE",
            "ALTER TABLE t5_p1 ADD FOREIGN KEY (t1_id) REFERENCES t1 (id) ON DELETE CASCADE",
            "CREATE INDEX ON t1 (tenant_id)",
            "CREATE INDEX ON t5 (tenant_id)",
            "CREATE INDEX ON t5 (t1_id)",
            "INSERT INTO t1 VALUES (1, 1)",
            "INSERT INTO t5 VALUES (1, 2, 1)",
        ],
    )
    before = tables(pg.url, ["t1", "t5"])
    try:
        with pytest.raises(CrossSubjectReference):
            erase_subject(pg.url, ["tenant_id"], 1, count_only=True)
        with pytest.raises(CrossSubjectReference):
            erase_subject(pg.url, ["tenant_id"], 1)
    finally:
        assert tables(pg.url, ["t1", "t5"]) == before, "another subject's row was removed"


@pytest.mark.postgres
def test_a_key_into_one_partition_is_a_key_into_the_partitioned_table(pg: TargetDB) -> None:
    # ``refunds`` references January's partition, not ``payments``: the refund of the
    # customer's January payment goes with it, counted by the dry run as well.
    refunds = [
        "CREATE TABLE refunds (id INTEGER PRIMARY KEY, payment_id INTEGER NOT NULL,"
        " paid DATE NOT NULL, FOREIGN KEY (payment_id, paid) REFERENCES payments_2024_01)",
        "CREATE INDEX ON refunds (payment_id, paid)",
        "INSERT INTO refunds VALUES (1, 100, '2024-01-05'), (2, 200, '2024-01-06')",
    ]
    run(pg.url, SCHEMA + DATA + refunds)
    counted = erase_subject(pg.url, ["customer_id"], 1, count_only=True)
    report = erase_subject(pg.url, ["customer_id"], 1, 1)
    for done in (counted, report):
        deleted = {o.table: o.rows for o in done.tables if o.action is TableAction.DELETE}
        assert deleted.get("public.refunds") == 1
    assert tables(pg.url, ["refunds"]) == {"refunds": [(2, 200, date(2024, 1, 6))]}
