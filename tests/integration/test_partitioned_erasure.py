"""Issue 20: a tenant that owns a whole LIST partition loses it at once (TRUNCATE, or
DETACH + DROP) instead of row by row, on PostgreSQL and MariaDB.

Every test checks outcomes: the subject's partition empty (or gone), every other
partition byte for byte as it was, the rows that referenced the subject's rows gone
first, the counts equal to the rows that were there, the dry run equal to the
erasure, and the erasure verified. Where a partition may not go whole (a DEFAULT or
multi-value partition, a hash partition, a DELETE trigger, a reference TRUNCATE
refuses), the rows go row by row and the report says no partition was removed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from api.cli import EXIT_OK, main
from models.erasure import ErasureReport, TableAction
from models.registry import Service
from tests.conftest import TargetDB
from worker.catalog.reflection import reflect
from worker.database import create_engine
from worker.exceptions import CrossSubjectReference
from worker.execution import ledger as ledgers
from worker.execution.erasure import dry_run, erase
from worker.execution.ledger import Ledger
from worker.execution.options import ExecutionOptions
from worker.planning.building import build_plan
from worker.service import run_service

Rows = list[tuple[Any, ...]]


def _erase(
    db: TargetDB,
    subject: object,
    mode: str = "truncate",
    virtual: Sequence[tuple[Sequence[str], Sequence[str]]] = (),
    batch_size: int = 2,
    lock_timeout_ms: int = 5000,
    ledger: Ledger | None = None,
) -> tuple[ErasureReport, ErasureReport]:
    """The dry run's report, then the erasure's (with ``ledger``: as a job's task)."""
    engine = create_engine(db.url, existing=True)
    try:
        plan = build_plan(reflect(engine), ["tenant_id"], virtual_fks=virtual)
        opts = ExecutionOptions(
            batch_size=batch_size, partitions=mode, lock_timeout_ms=lock_timeout_ms
        )
        predicted = dry_run(engine, plan, subject, opts)
        return predicted, erase(engine, plan, subject, replace(opts, ledger=ledger))
    finally:
        engine.dispose()


def _rows(db: TargetDB, source: str) -> Rows:
    with db.engine.connect() as conn:
        return sorted(tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {source}"))


def _deleted(report: ErasureReport) -> dict[str, int]:
    return {o.table: o.rows for o in report.tables if o.action is TableAction.DELETE}


def _pg_partitions(db: TargetDB) -> set[str]:
    with db.engine.connect() as conn:
        return set(
            conn.exec_driver_sql(
                "SELECT relname FROM pg_class WHERE relispartition AND relkind IN ('r', 'p')"
            ).scalars()
        )


def _agree(predicted: ErasureReport, report: ErasureReport) -> None:
    assert report.verified
    assert _deleted(predicted) == _deleted(report)
    assert predicted.total_rows == report.total_rows
    assert predicted.partitions_removed == report.partitions_removed


# --- PostgreSQL -------------------------------------------------------------------------

PG_ORDERS = [
    "CREATE TABLE orders (tenant_id TEXT NOT NULL, id INTEGER NOT NULL, note TEXT,"
    " PRIMARY KEY (tenant_id, id)) PARTITION BY LIST (tenant_id)",
    "CREATE TABLE orders_acme PARTITION OF orders FOR VALUES IN ('acme')",
    "CREATE TABLE orders_globex PARTITION OF orders FOR VALUES IN ('globex')",
    # Two tenants share a partition: neither owns it.
    "CREATE TABLE orders_pair PARTITION OF orders FOR VALUES IN ('initech', 'umbrella')",
    "CREATE TABLE orders_rest PARTITION OF orders DEFAULT",
    "INSERT INTO orders SELECT t, g, 'n' || g FROM unnest(ARRAY['acme', 'globex',"
    " 'initech', 'umbrella', 'zed']) t, generate_series(1, 5) g",
]
PG_LINES = [
    "CREATE TABLE order_lines (id INTEGER PRIMARY KEY, order_tenant TEXT NOT NULL,"
    " order_id INTEGER NOT NULL, FOREIGN KEY (order_tenant, order_id) REFERENCES orders)",
    "CREATE INDEX ON order_lines (order_tenant, order_id)",
    "INSERT INTO order_lines SELECT row_number() OVER (), tenant_id, id FROM orders, "
    " generate_series(1, 2)",
]
OTHERS = ("orders_globex", "orders_pair", "orders_rest")


@pytest.mark.postgres
def test_truncate_empties_only_the_subjects_partition(pg: TargetDB) -> None:
    pg.run(*PG_ORDERS)
    before = {p: _rows(pg, p) for p in OTHERS}
    predicted, report = _erase(pg, "acme")
    _agree(predicted, report)
    assert report.partitions_removed == ["public.orders (truncate)"]
    assert _deleted(report) == {"public.orders": 5}
    assert _rows(pg, "orders_acme") == []
    assert "orders_acme" in _pg_partitions(pg), "truncate keeps the partition"
    assert {p: _rows(pg, p) for p in OTHERS} == before
    # A new order of the tenant goes to its own partition again, not to DEFAULT.
    pg.run("INSERT INTO orders VALUES ('acme', 9, 'again')")
    assert _rows(pg, "orders_acme") == [("acme", 9, "again")]


@pytest.mark.postgres
def test_drop_takes_the_referencing_rows_first_then_the_partition(pg: TargetDB) -> None:
    pg.run(*PG_ORDERS, *PG_LINES)
    lines_before = _rows(pg, "order_lines")
    before = {p: _rows(pg, p) for p in OTHERS}
    predicted, report = _erase(pg, "acme", mode="drop")
    _agree(predicted, report)
    assert report.partitions_removed == ["public.orders (drop)"]
    assert _deleted(report) == {"public.order_lines": 10, "public.orders": 5}
    assert "orders_acme" not in _pg_partitions(pg)
    assert {p: _rows(pg, p) for p in OTHERS} == before
    assert _rows(pg, "order_lines") == [r for r in lines_before if r[1] != "acme"]


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["truncate", "drop"])
def test_every_mode_leaves_what_the_cascade_oracle_leaves(
    pg: TargetDB, pg_twin: TargetDB, mode: str
) -> None:
    # The oracle: the same rows with ON DELETE CASCADE, the subject's anchor rows
    # deleted by hand (as tests/differential/oracle.py does).
    cascading = [
        s.replace("REFERENCES orders", "REFERENCES orders ON DELETE CASCADE") for s in PG_LINES
    ]
    pg_twin.run(*PG_ORDERS, *cascading, "DELETE FROM orders WHERE tenant_id = 'acme'")
    pg.run(*PG_ORDERS, *PG_LINES)
    _, report = _erase(pg, "acme", mode=mode)
    assert report.verified
    for table in ("orders", "order_lines", *OTHERS):
        assert _rows(pg, table) == _rows(pg_twin, table), table


@pytest.mark.postgres
def test_truncate_of_a_referenced_table_goes_row_by_row(pg: TargetDB) -> None:
    # PostgreSQL refuses TRUNCATE on a table a foreign key references: rows it is.
    pg.run(*PG_ORDERS, *PG_LINES)
    predicted, report = _erase(pg, "acme")
    _agree(predicted, report)
    assert report.partitions_removed == []
    assert _deleted(report) == {"public.order_lines": 10, "public.orders": 5}
    assert "orders_acme" in _pg_partitions(pg)


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["truncate", "drop"])
def test_another_subjects_reference_is_refused_before_writing(pg: TargetDB, mode: str) -> None:
    # globex's note points at one of acme's orders: acme may not go, whole or not.
    pg.run(
        *PG_ORDERS,
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, tenant_id TEXT NOT NULL,"
        " order_tenant TEXT, order_id INTEGER,"
        " FOREIGN KEY (order_tenant, order_id) REFERENCES orders)",
        "INSERT INTO notes VALUES (1, 'acme', 'acme', 1), (2, 'globex', 'acme', 2)",
    )
    before = {t: _rows(pg, t) for t in ("orders_acme", *OTHERS, "notes")}
    with pytest.raises(CrossSubjectReference):
        _erase(pg, "acme", mode=mode)
    assert {t: _rows(pg, t) for t in before} == before
    assert "orders_acme" in _pg_partitions(pg)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "subject",
    [
        "initech",  # shares its partition with umbrella
        "zed",  # in the DEFAULT partition, which is never removed
    ],
)
def test_shared_and_default_partitions_go_row_by_row(pg: TargetDB, subject: str) -> None:
    pg.run(*PG_ORDERS)
    partitions = _pg_partitions(pg)
    predicted, report = _erase(pg, subject, mode="drop")
    _agree(predicted, report)
    assert report.partitions_removed == []
    assert _deleted(report) == {"public.orders": 5}
    assert _pg_partitions(pg) == partitions
    assert not [r for r in _rows(pg, "orders") if r[0] == subject]
    assert len(_rows(pg, "orders")) == 20


@pytest.mark.postgres
def test_a_delete_trigger_keeps_the_rows_going_one_by_one(pg: TargetDB) -> None:
    # TRUNCATE and DROP fire no DELETE trigger: the audit would miss every row.
    pg.run(
        *PG_ORDERS,
        "CREATE TABLE audit (tenant TEXT, order_id INTEGER)",
        "CREATE FUNCTION audited() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN INSERT INTO audit VALUES (NULL, OLD.id); RETURN OLD; END $$",
        "CREATE TRIGGER orders_audit AFTER DELETE ON orders_acme"
        " FOR EACH ROW EXECUTE FUNCTION audited()",
    )
    predicted, report = _erase(pg, "acme")
    _agree(predicted, report)
    assert report.partitions_removed == []
    assert len(_rows(pg, "audit")) == 5


@pytest.mark.postgres
def test_a_sub_partitioned_tenant_goes_whole(pg: TargetDB) -> None:
    pg.run(
        "CREATE TABLE events (tenant_id TEXT NOT NULL, id INTEGER NOT NULL,"
        " PRIMARY KEY (tenant_id, id)) PARTITION BY LIST (tenant_id)",
        "CREATE TABLE events_acme PARTITION OF events FOR VALUES IN ('acme')"
        " PARTITION BY RANGE (id)",
        "CREATE TABLE events_acme_low PARTITION OF events_acme FOR VALUES FROM (0) TO (3)",
        "CREATE TABLE events_acme_high PARTITION OF events_acme FOR VALUES FROM (3) TO (100)",
        "CREATE TABLE events_globex PARTITION OF events FOR VALUES IN ('globex')",
        "INSERT INTO events SELECT t, g FROM unnest(ARRAY['acme', 'globex']) t,"
        " generate_series(1, 6) g",
    )
    globex = _rows(pg, "events_globex")
    predicted, report = _erase(pg, "acme", mode="drop")
    _agree(predicted, report)
    assert report.partitions_removed == ["public.events (drop)"]
    assert _deleted(report) == {"public.events": 6}
    assert not {"events_acme", "events_acme_low", "events_acme_high"} & _pg_partitions(pg)
    assert _rows(pg, "events_globex") == globex


@pytest.mark.postgres
def test_hash_partitions_hold_many_tenants_and_go_row_by_row(pg: TargetDB) -> None:
    pg.run(
        "CREATE TABLE events (tenant_id INTEGER NOT NULL, id INTEGER NOT NULL,"
        " PRIMARY KEY (tenant_id, id)) PARTITION BY HASH (tenant_id)",
        "CREATE TABLE events_0 PARTITION OF events FOR VALUES WITH (MODULUS 2, REMAINDER 0)",
        "CREATE TABLE events_1 PARTITION OF events FOR VALUES WITH (MODULUS 2, REMAINDER 1)",
        "INSERT INTO events SELECT t, g FROM generate_series(1, 6) t, generate_series(1, 3) g",
    )
    predicted, report = _erase(pg, 1, mode="drop")
    _agree(predicted, report)
    assert report.partitions_removed == []
    assert len(_rows(pg, "events")) == 15


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["truncate", "drop"])
def test_a_partition_lock_not_had_in_time_leaves_the_rows_to_the_batches(
    pg: TargetDB, mode: str
) -> None:
    # A long reader of acme's partition: the partition's lock cannot be had, row locks can.
    pg.run(*PG_ORDERS)
    partitions = _pg_partitions(pg)
    with pg.engine.connect() as reader:
        reader.exec_driver_sql("SELECT count(*) FROM orders_acme").scalar()
        _, report = _erase(pg, "acme", mode=mode, lock_timeout_ms=300)
        reader.rollback()
    assert report.verified
    assert report.partitions_removed == []
    assert "public.orders: its partition could not be removed whole (55P03)" in " ".join(
        report.warnings
    )
    assert _deleted(report) == {"public.orders": 5}
    assert _pg_partitions(pg) == partitions


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("mode", "whole"),
    [
        # TRUNCATE locks acme's partition only: a writer of globex's is no obstacle.
        ("truncate", ["public.orders (truncate)"]),
        # DETACH locks the partitioned table: the writer's open transaction holds it off
        # until the lock timeout, and the rows go in batches.
        ("drop", []),
    ],
)
def test_a_writer_of_another_tenant_and_the_locks_each_mode_takes(
    pg: TargetDB, mode: str, whole: list[str]
) -> None:
    pg.run(*PG_ORDERS)
    with pg.engine.connect() as writer:
        writer.exec_driver_sql("INSERT INTO orders VALUES ('globex', 99, 'open')")
        _, report = _erase(pg, "acme", mode=mode, lock_timeout_ms=300)
        writer.commit()
    assert report.verified
    assert report.partitions_removed == whole
    assert _deleted(report) == {"public.orders": 5}
    assert ("globex", 99, "open") in _rows(pg, "orders_globex")


# --- MariaDB ----------------------------------------------------------------------------

MY_ORDERS = [
    "CREATE TABLE orders (tenant_id VARCHAR(20) NOT NULL, id INTEGER NOT NULL, note TEXT,"
    " PRIMARY KEY (tenant_id, id)) PARTITION BY LIST COLUMNS (tenant_id) ("
    " PARTITION p_acme VALUES IN ('acme'), PARTITION p_globex VALUES IN ('globex'),"
    " PARTITION p_pair VALUES IN ('initech', 'umbrella'), PARTITION p_rest DEFAULT)",
    "INSERT INTO orders SELECT t.v, g.n, CONCAT('n', g.n) FROM"
    " (SELECT 'acme' v UNION ALL SELECT 'globex' UNION ALL SELECT 'initech'"
    "  UNION ALL SELECT 'umbrella' UNION ALL SELECT 'zed') t,"
    " (SELECT 1 n UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4"
    "  UNION ALL SELECT 5) g",
    # Partitioned InnoDB tables take no foreign keys: the lines reference the orders
    # through a virtual one (the registry's).
    "CREATE TABLE order_lines (id INTEGER PRIMARY KEY AUTO_INCREMENT,"
    " order_tenant VARCHAR(20) NOT NULL, order_id INTEGER NOT NULL,"
    " KEY (order_tenant, order_id))",
    "INSERT INTO order_lines (order_tenant, order_id) SELECT tenant_id, id FROM orders",
    "INSERT INTO order_lines (order_tenant, order_id) SELECT tenant_id, id FROM orders",
]
LINES_REFERENCE_ORDERS = [
    (("order_lines.order_tenant", "order_lines.order_id"), ("orders.tenant_id", "orders.id"))
]
MY_OTHERS = ("p_globex", "p_pair", "p_rest")


def _my_partitions(db: TargetDB) -> set[str]:
    with db.engine.connect() as conn:
        return set(
            conn.exec_driver_sql(
                "SELECT PARTITION_NAME FROM information_schema.PARTITIONS"
                " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'orders'"
            ).scalars()
        )


@pytest.mark.mysql
@pytest.mark.parametrize("mode", ["truncate", "drop"])
def test_mariadb_removes_the_subjects_partition(mysql: TargetDB, mode: str) -> None:
    mysql.run(*MY_ORDERS)
    before = {p: _rows(mysql, f"orders PARTITION ({p})") for p in MY_OTHERS}
    lines_before = _rows(mysql, "order_lines")
    predicted, report = _erase(mysql, "acme", mode, LINES_REFERENCE_ORDERS)
    _agree(predicted, report)
    schema = mysql.default_schema
    assert report.partitions_removed == [f"{schema}.orders ({mode})"]
    assert _deleted(report) == {f"{schema}.order_lines": 10, f"{schema}.orders": 5}
    assert {p: _rows(mysql, f"orders PARTITION ({p})") for p in MY_OTHERS} == before
    assert _rows(mysql, "order_lines") == [r for r in lines_before if r[1] != "acme"]
    assert ("p_acme" in _my_partitions(mysql)) is (mode == "truncate")
    assert not [r for r in _rows(mysql, "orders") if r[0] == "acme"]


@pytest.mark.mysql
def test_a_task_on_mariadb_erases_partitions_in_batches_with_its_ledger(
    mysql: TargetDB,
) -> None:
    """Under a job's task (a ledger), MariaDB's partition goes in batches: its DDL would
    commit apart from the ledger row that keeps the count exact through a crash."""
    mysql.run(*MY_ORDERS)
    task = Ledger("job-p:orders", "lease-p")
    _predicted, report = _erase(mysql, "acme", "truncate", LINES_REFERENCE_ORDERS, ledger=task)
    schema = mysql.default_schema
    assert report.partitions_removed == []
    assert _deleted(report) == {f"{schema}.order_lines": 10, f"{schema}.orders": 5}
    assert "p_acme" in _my_partitions(mysql)
    assert not [r for r in _rows(mysql, "orders") if r[0] == "acme"]
    entries = ledgers.read(mysql.engine, "job-p:orders")
    assert ledgers.fold(entries, 0)[1] == {
        f"{schema}.order_lines:delete": 10,
        f"{schema}.orders:delete": 5,
    }


@pytest.mark.mysql
def test_mariadb_another_subjects_reference_is_refused(mysql: TargetDB) -> None:
    mysql.run(
        *MY_ORDERS,
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, tenant_id VARCHAR(20) NOT NULL,"
        " order_tenant VARCHAR(20), order_id INTEGER, KEY (order_tenant, order_id))",
        "INSERT INTO notes VALUES (1, 'globex', 'acme', 1)",
    )
    virtual = [
        *LINES_REFERENCE_ORDERS,
        (("notes.order_tenant", "notes.order_id"), ("orders.tenant_id", "orders.id")),
    ]
    before = {t: _rows(mysql, t) for t in ("orders", "order_lines", "notes")}
    with pytest.raises(CrossSubjectReference):
        _erase(mysql, "acme", "truncate", virtual)
    assert {t: _rows(mysql, t) for t in before} == before


@pytest.mark.mysql
@pytest.mark.parametrize("subject", ["initech", "zed"])  # a shared partition; DEFAULT
def test_mariadb_shared_and_default_partitions_go_row_by_row(mysql: TargetDB, subject: str) -> None:
    mysql.run(*MY_ORDERS)
    partitions = _my_partitions(mysql)
    predicted, report = _erase(mysql, subject, "drop", LINES_REFERENCE_ORDERS)
    _agree(predicted, report)
    assert report.partitions_removed == []
    assert _deleted(report)[f"{mysql.default_schema}.orders"] == 5
    assert _my_partitions(mysql) == partitions


@pytest.mark.mysql
def test_mariadb_sub_partitions_go_row_by_row(mysql: TargetDB) -> None:
    mysql.run(
        "CREATE TABLE orders (tenant_id VARCHAR(20) NOT NULL, id INTEGER NOT NULL,"
        " PRIMARY KEY (tenant_id, id)) PARTITION BY LIST COLUMNS (tenant_id)"
        " SUBPARTITION BY HASH (id) SUBPARTITIONS 2 ("
        " PARTITION p_acme VALUES IN ('acme'), PARTITION p_globex VALUES IN ('globex'))",
        "INSERT INTO orders VALUES ('acme', 1), ('acme', 2), ('acme', 3), ('globex', 1)",
    )
    predicted, report = _erase(mysql, "acme", "drop")
    _agree(predicted, report)
    assert report.partitions_removed == []
    assert _rows(mysql, "orders") == [("globex", 1)]
    assert "p_acme" in _my_partitions(mysql)


@pytest.mark.mysql
def test_mariadb_case_folded_partition_value_is_not_taken_for_the_subject(
    mysql: TargetDB,
) -> None:
    # The collation routes 'ACME' to acme's partition; its rows are not the subject's
    # ('acme' exactly), so the partition may not go whole.
    mysql.run(*MY_ORDERS[:2], "INSERT INTO orders VALUES ('ACME', 99, 'x')")
    predicted, report = _erase(mysql, "acme")
    _agree(predicted, report)
    assert report.partitions_removed == []
    assert any("could not be proved" in w for w in report.warnings)
    assert _rows(mysql, "orders PARTITION (p_acme)") == [("ACME", 99, "x")]


@pytest.mark.mysql
def test_mariadb_table_lock_not_had_in_time_leaves_the_rows_to_the_batches(
    mysql: TargetDB,
) -> None:
    # An open transaction that read the table holds its metadata lock: LOCK TABLES ...
    # WRITE waits for it, row deletes do not.
    mysql.run(*MY_ORDERS)
    with mysql.engine.connect() as reader:
        reader.exec_driver_sql("SELECT count(*) FROM orders").scalar()
        _, report = _erase(mysql, "acme", "truncate", LINES_REFERENCE_ORDERS, 2, 1000)
        reader.rollback()
    assert report.verified
    assert report.partitions_removed == []
    assert _deleted(report)[f"{mysql.default_schema}.orders"] == 5


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["drop", "rows"])
def test_eraser_erase_partitions_option(
    pg: TargetDB, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pg.run(*PG_ORDERS)
    argv = ["erase", "--db", pg.url, "--subject-column", "tenant_id", "--subject", "acme"]
    assert main([*argv, "--partitions", mode, "--dry-run", "--json"]) == EXIT_OK
    counted = json.loads(capsys.readouterr().out)
    assert main([*argv, "--partitions", mode, "--yes", "--json"]) == EXIT_OK
    done = json.loads(capsys.readouterr().out)
    whole = ["public.orders (drop)"] if mode == "drop" else []
    assert counted["partitions_removed"] == done["partitions_removed"] == whole
    assert counted["total_rows"] == done["total_rows"] == 5
    assert ("orders_acme" in _pg_partitions(pg)) is (mode == "rows")


@pytest.mark.postgres
def test_a_registered_service_takes_its_partitions_setting(pg: TargetDB) -> None:
    pg.run(*PG_ORDERS)
    service = Service(url_env="ORDERS_DATABASE_URL", partitions="drop")
    engine = create_engine(pg.url, existing=True)
    try:
        counted = run_service(engine, "orders", service, "tenant", ["tenant_id"], "acme", True)
        done = run_service(engine, "orders", service, "tenant", ["tenant_id"], "acme", False)
    finally:
        engine.dispose()
    assert counted.partitions_removed == done.partitions_removed == ["public.orders (drop)"]
    assert "orders_acme" not in _pg_partitions(pg)
    with pytest.raises(ValueError, match="partitions"):
        Service(url_env="ORDERS_DATABASE_URL", partitions="detach")  # type: ignore[arg-type]


def test_partition_modes_are_checked() -> None:
    with pytest.raises(ValueError, match="partitions must be one of"):
        ExecutionOptions(partitions="detach")
    assert ExecutionOptions().partitions == "truncate"
