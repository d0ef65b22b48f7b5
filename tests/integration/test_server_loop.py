"""The server-side loop (``worker.execution.serverloop``): batches run inside PostgreSQL, in
``DO`` blocks that commit each batch, on a real server.

* the same data erased by the loop and by the client ends byte for byte the same,
  with awkward text keys and subject values (quotes, backslashes, dollar quotes,
  percent signs), nested sweeps, a cleared ``SET NULL`` reference, and no row left
  pointing at nothing;
* a call of one batch at a time resumes where the last committed batch ended;
* another subject's row swept along rolls that batch back, and only that one;
* an error midway (a lock held by another session) reports the batches committed
  before it, and a re-run finishes; a deadline ends a slice between calls;
* a column named like the loop's variables keeps the walk on the client.
"""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.pool import NullPool

from api.cli import EXIT_OK, main
from models.erasure import ErasureReport, TableAction
from models.registry import Service
from tests.conftest import TargetDB
from tests.integration.test_reference_checks import orphans
from worker.catalog.reflection import reflect
from worker.database import create_engine
from worker.dialects import dialect_named
from worker.execution import server_batches
from worker.execution.erasure import erase
from worker.execution.options import ExecutionOptions, Progress, SliceEnded
from worker.execution.serverloop import LoopRun, ServerLoop, loop_type
from worker.faults import DatabaseFailure
from worker.planning.building import build_plan
from worker.service import run_service

pytestmark = pytest.mark.postgres

#: Subject and keys with everything a literal in a dollar-quoted block must survive.
SUBJECT = "it's \\ $$ %s $eraser_0$ 'x"
OTHERS = ("plain", "o'ther $$")
TABLES = ("tenants", "Customer", "orders", "order line", "line_notes", "visits", "reviews")

SCHEMA = """
CREATE TABLE tenants (id text PRIMARY KEY);
CREATE TABLE "Customer" (
    key text PRIMARY KEY, tenant_id text NOT NULL REFERENCES tenants, name text);
CREATE TABLE orders (
    id bigint PRIMARY KEY, tenant_id text NOT NULL REFERENCES tenants,
    customer_key text NOT NULL REFERENCES "Customer"(key));
CREATE TABLE "order line" (
    id bigint PRIMARY KEY, order_id bigint NOT NULL REFERENCES orders, note text);
CREATE TABLE line_notes (
    id bigint PRIMARY KEY, line_id bigint NOT NULL REFERENCES "order line");
CREATE TABLE visits (
    id bigint PRIMARY KEY, tenant_id text NOT NULL REFERENCES tenants,
    customer_key text REFERENCES "Customer"(key) ON DELETE SET NULL);
CREATE TABLE reviews (
    id bigint PRIMARY KEY, tenant_id text NOT NULL REFERENCES tenants,
    order_id bigint NOT NULL REFERENCES orders);
CREATE INDEX ON "Customer"(tenant_id);
CREATE INDEX ON orders(tenant_id);
CREATE INDEX ON orders(customer_key);
CREATE INDEX ON "order line"(order_id);
CREATE INDEX ON line_notes(line_id);
CREATE INDEX ON visits(tenant_id);
CREATE INDEX ON visits(customer_key);
CREATE INDEX ON reviews(tenant_id);
CREATE INDEX ON reviews(order_id);
"""


class Calls:
    """Counts the loop's calls, and what they committed (the real loop runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.runs: list[LoopRun] = []
        original = ServerLoop.run

        def run(loop: ServerLoop, *args: Any, **kwargs: Any) -> Any:
            result = original(loop, *args, **kwargs)
            self.runs.append(result[0])
            return result

        monkeypatch.setattr(ServerLoop, "run", run)


def _load(db: TargetDB, customers: int = 40) -> None:
    """Three tenants; the subject's customers have awkward keys. Each customer has two
    orders of two lines with a note each, a visit, and each order a review; a visit of
    another tenant points at one of the subject's customers (cleared, not removed)."""
    db.run(SCHEMA)
    tenants = [SUBJECT, *OTHERS]
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
    rows["tenants"] = [{"id": t} for t in tenants]
    oid = lid = vid = 0
    for i in range(customers):
        tenant = tenants[i % 3]
        key = f"{tenant}/{i:04d} \\ ' $$"
        rows["Customer"].append({"key": key, "tenant_id": tenant, "name": f"c{i} %"})
        vid += 1
        rows["visits"].append({"id": vid, "tenant_id": tenant, "customer_key": key})
        for _ in range(2):
            oid += 1
            rows["orders"].append({"id": oid, "tenant_id": tenant, "customer_key": key})
            rows["reviews"].append({"id": oid, "tenant_id": tenant, "order_id": oid})
            for _ in range(2):
                lid += 1
                rows["order line"].append({"id": lid, "order_id": oid, "note": "n"})
                rows["line_notes"].append({"id": lid, "line_id": lid})
    vid += 1
    rows["visits"].append(
        {"id": vid, "tenant_id": OTHERS[0], "customer_key": rows["Customer"][0]["key"]}
    )
    md = sa.MetaData()
    md.reflect(db.engine)
    for name in TABLES:
        db.insert(md.tables[name], rows[name])


def _tables(db: TargetDB) -> list[sa.Table]:
    md = sa.MetaData()
    md.reflect(db.engine)
    return [md.tables[name] for name in TABLES]


def _subject_rows(db: TargetDB) -> dict[str, int]:
    with db.engine.connect() as conn:
        return {
            "Customer": conn.execute(
                sa.text('SELECT count(*) FROM "Customer" WHERE tenant_id = :s'), {"s": SUBJECT}
            ).scalar_one(),
            "orders": conn.execute(
                sa.text("SELECT count(*) FROM orders WHERE tenant_id = :s"), {"s": SUBJECT}
            ).scalar_one(),
            "order line": conn.execute(
                sa.text(
                    'SELECT count(*) FROM "order line" l JOIN orders o ON o.id = l.order_id'
                    " WHERE o.tenant_id = :s"
                ),
                {"s": SUBJECT},
            ).scalar_one(),
        }


def _erase(db: TargetDB, options: ExecutionOptions, progress: Any = None) -> ErasureReport:
    plan = build_plan(reflect(db.engine), ["tenant_id", "tenants.id"])
    return erase(db.engine, plan, SUBJECT, options, progress)


def _by_table(report: ErasureReport) -> dict[tuple[str, TableAction], int]:
    return {(t.table, t.action): t.rows for t in report.tables}


def test_loop_and_client_end_the_same(
    pg: TargetDB, pg_twin: TargetDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    _load(pg)
    _load(pg_twin)
    assert pg.snapshot(*_tables(pg)) == pg_twin.snapshot(*_tables(pg_twin))
    calls = Calls(monkeypatch)
    served = _erase(pg, ExecutionOptions(batch_size=4, fk_checks="eraser"))
    in_server = len(calls.runs)
    by_client = _erase(
        pg_twin, ExecutionOptions(batch_size=4, fk_checks="eraser", server_batches=False)
    )
    # The loop ran for the anchors (and committed batches); the twin never used it.
    assert in_server >= 4
    assert len(calls.runs) == in_server
    assert sum(r.batches for r in calls.runs) >= 8
    assert served.verified
    assert by_client.verified
    assert _by_table(served) == _by_table(by_client)
    # The report names the tables whose rows went in the server's batches, swept
    # children included; the twin's went from the client only.
    assert {"public.orders", "public.order line", "public.line_notes"} <= set(
        served.batched_in_server
    )
    assert by_client.batched_in_server == []
    # 14 customers of 40 are the subject's (i % 3 == 0): 28 orders, 56 lines and notes,
    # 28 reviews, 14 visits, 1 tenant; the other tenant's visit of a subject customer
    # is cleared.
    assert served.total_rows == 14 + 28 + 56 + 56 + 28 + 14 + 1
    assert _by_table(served)[("public.visits", TableAction.NULLIFY)] == 1
    assert pg.snapshot(*_tables(pg)) == pg_twin.snapshot(*_tables(pg_twin))
    assert _subject_rows(pg) == {"Customer": 0, "orders": 0, "order line": 0}
    checked, found = orphans(pg.engine)
    assert checked == 9
    assert found == {}


def test_one_batch_per_call_resumes_from_the_last(
    pg: TargetDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    _load(pg, customers=60)
    monkeypatch.setattr(server_batches, "_LOOP_SECONDS", 0.0)
    calls = Calls(monkeypatch)
    seen: list[Progress] = []
    report = _erase(pg, ExecutionOptions(batch_size=3, fk_checks="eraser"), seen.append)
    assert report.verified
    assert report.total_rows == 20 + 40 + 80 + 80 + 40 + 20 + 1
    # Every call ran exactly one batch, and the keyset went on from the last one: the
    # 40 orders took 14 calls (13 full batches and the last, short one).
    assert calls.runs
    assert all(r.batches == 1 for r in calls.runs)
    orders = [p for p in seen if p.table == "public.orders"]
    assert sum(p.rows for p in orders) == 40
    assert len(orders) == 14
    assert all(p.server_batch_seconds > 0 for p in orders)
    assert _subject_rows(pg) == {"Customer": 0, "orders": 0, "order line": 0}
    assert orphans(pg.engine)[1] == {}


def test_another_subjects_row_swept_along_rolls_that_batch_back(
    pg: TargetDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review of another tenant appears on one of the subject's orders midway: the
    loop's batch that would sweep it is rolled back (the review stays), the client's
    way takes the batch and the database refuses the order."""
    _load(pg)
    monkeypatch.setattr(server_batches, "_LOOP_SECONDS", 0.0)
    calls = Calls(monkeypatch)
    with pg.engine.connect() as conn:
        last_order = conn.execute(
            sa.text("SELECT max(id) FROM orders WHERE tenant_id = :s"), {"s": SUBJECT}
        ).scalar_one()
    injected: list[int] = []

    def on_progress(p: Progress) -> None:
        if p.table == "public.orders" and not injected:
            with pg.engine.begin() as conn:
                conn.execute(
                    sa.text("INSERT INTO reviews VALUES (9999, :t, :o)"),
                    {"t": OTHERS[0], "o": last_order},
                )
            injected.append(last_order)

    with pytest.raises(DatabaseFailure) as refused:
        _erase(pg, ExecutionOptions(batch_size=4, fk_checks="eraser"), on_progress)
    assert refused.value.code == "23503"
    assert injected
    assert any(r.gave_back == "ERAS1" for r in calls.runs)
    with pg.engine.connect() as conn:
        review = conn.execute(sa.text("SELECT tenant_id, order_id FROM reviews WHERE id = 9999"))
        assert review.one() == (OTHERS[0], last_order)
        left = conn.execute(
            sa.text("SELECT count(*) FROM orders WHERE tenant_id = :s"), {"s": SUBJECT}
        ).scalar_one()
    # The batches before the one given back are gone; the one holding that order is not.
    assert 1 <= left <= 4
    assert orphans(pg.engine)[1] == {}


def test_an_error_midway_reports_what_was_committed(pg: TargetDB) -> None:
    """Another session holds a lock on an order of the third batch: the call fails on
    it (lock timeout), after committing two batches, which progress reports."""
    _load(pg)
    with pg.engine.connect() as conn:
        ids = list(
            conn.execute(
                sa.text("SELECT id FROM orders WHERE tenant_id = :s ORDER BY id"), {"s": SUBJECT}
            ).scalars()
        )
    locked = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with pg.engine.connect() as conn, conn.begin():
            conn.execute(sa.text("SELECT 1 FROM orders WHERE id = :i FOR UPDATE"), {"i": ids[9]})
            locked.set()
            release.wait(30)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert locked.wait(10)
    seen: list[Progress] = []
    options = ExecutionOptions(batch_size=4, fk_checks="eraser", lock_timeout_ms=300)
    try:
        with pytest.raises(DatabaseFailure) as failed:
            _erase(pg, options, seen.append)
    finally:
        release.set()
        holder.join(10)
    assert failed.value.code == "55P03"
    assert failed.value.transient
    reported = sum(p.rows for p in seen if p.table == "public.orders")
    assert reported == 8  # two batches of four, committed before the locked one
    assert _subject_rows(pg)["orders"] == len(ids) - 8
    report = _erase(pg, ExecutionOptions(batch_size=4, fk_checks="eraser"))
    assert report.verified
    assert _by_table(report)[("public.orders", TableAction.DELETE)] == len(ids) - 8
    assert orphans(pg.engine)[1] == {}


def _kill_midway(pg: TargetDB, start: int, stop: threading.Event, killed: list[int]) -> None:
    """Terminate the backend running the loop once some of the subject's orders are gone
    (committed by it) and some remain, at a random moment within a batch."""
    watcher = create_engine(pg.engine.url, poolclass=NullPool)
    try:
        with watcher.connect() as conn:
            while not stop.is_set():
                left = conn.execute(
                    sa.text("SELECT count(*) FROM orders WHERE tenant_id = :s"), {"s": SUBJECT}
                ).scalar_one()
                pid = conn.execute(
                    sa.text(
                        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                        " AND state = 'active' AND query LIKE 'DO $eraser_%'"
                    )
                ).scalar()
                conn.rollback()
                if pid is not None and 0 < left < start - 20:
                    time.sleep(random.uniform(0, 0.003))
                    conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                    conn.rollback()
                    killed.append(pid)
                    return
                time.sleep(0.002)
    finally:
        watcher.dispose()


@pytest.mark.parametrize("attempt", range(3))
def test_a_lost_session_midway_reports_what_was_committed(pg: TargetDB, attempt: int) -> None:
    """The loop's tally lives in its session; a killed backend took it along, and the
    batches its call had committed went unreported (595 of 850 rows in review). Each
    batch now tells its tally in a notice before its COMMIT, and whether that last
    COMMIT happened is asked of the server: the report is exact wherever the kill
    lands."""
    _load(pg, customers=300)
    before = _subject_rows(pg)
    seen: list[Progress] = []
    stop = threading.Event()
    killed: list[int] = []
    killer = threading.Thread(target=_kill_midway, args=(pg, before["orders"], stop, killed))
    killer.start()
    try:
        with pytest.raises(DatabaseFailure) as failed:
            _erase(pg, ExecutionOptions(batch_size=1, fk_checks="eraser"), seen.append)
    finally:
        stop.set()
        killer.join(10)
    assert killed, "the loop's backend was never terminated"
    assert failed.value.transient
    after = _subject_rows(pg)
    assert 0 < after["orders"] < before["orders"]
    reported = seen[-1].rows_by_table if seen else {}
    for name in ("orders", "order line"):
        assert reported.get(f"public.{name}:delete", 0) == before[name] - after[name], name
    report = _erase(pg, ExecutionOptions(batch_size=4, fk_checks="eraser"))
    assert report.verified
    by_table = _by_table(report)
    assert by_table[("public.orders", TableAction.DELETE)] == after["orders"]


def test_a_deadline_ends_the_slice_between_calls(pg: TargetDB) -> None:
    _load(pg)
    total = 0
    slices: list[list[Any]] = []
    for _ in range(50):
        options = ExecutionOptions(
            batch_size=4, fk_checks="eraser", deadline=time.monotonic() + 0.001
        )
        try:
            report = _erase(pg, options)
        except SliceEnded as ended:
            slices.append(ended.tables)
            continue
        total += report.total_rows
        assert report.verified
        break
    else:
        pytest.fail("the erasure never finished")
    assert slices
    # Each slice changed rows (one may only have cleared the other visit).
    assert all(sum(t.rows for t in tables) > 0 for tables in slices)
    total += sum(t.rows for tables in slices for t in tables if t.action is not TableAction.NULLIFY)
    assert total == 14 + 28 + 56 + 56 + 28 + 14 + 1
    assert orphans(pg.engine)[1] == {}


def test_a_column_named_like_the_loops_variables_keeps_the_client(
    pg: TargetDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    _load(pg)
    pg.run("ALTER TABLE orders ADD COLUMN eraser_n integer")
    calls = Calls(monkeypatch)
    report = _erase(pg, ExecutionOptions(batch_size=4, fk_checks="eraser"))
    assert calls.runs == []
    assert report.verified
    assert report.total_rows == 14 + 28 + 56 + 56 + 28 + 14 + 1


def test_the_loop_carries_plain_integer_and_text_keys_only() -> None:
    """A key the loop would compare one way and sort another (``citext`` ignores case)
    would make its keyset skip rows: such types go by client."""
    dialect = postgresql.psycopg2.dialect()  # type: ignore[no-untyped-call]
    assert loop_type(sa.BigInteger(), dialect) == "BIGINT"
    assert loop_type(sa.SmallInteger(), dialect) == "SMALLINT"
    assert loop_type(sa.VARCHAR(40), dialect) == "text"
    assert loop_type(sa.TEXT(), dialect) == "text"
    for other in (
        postgresql.CITEXT(),
        sa.CHAR(3),
        sa.Enum("a", "b", name="ab"),
        sa.Numeric(),
        postgresql.UUID(),
        sa.Boolean(),
    ):
        assert loop_type(other, dialect) is None, other


def test_an_erasure_session_runs_without_parallel_workers(pg: TargetDB) -> None:
    """Background work keeps to its own backend: no parallel workers for its counts."""
    pg.run("CREATE TABLE wide AS SELECT g FROM generate_series(1, 20000) g", "ANALYZE wide")
    count = "EXPLAIN SELECT count(*) FROM wide"
    with pg.engine.connect() as conn:
        # Parallel plans made as cheap as they get, so that this count would use them.
        conn.exec_driver_sql("SET parallel_setup_cost = 0")
        conn.exec_driver_sql("SET parallel_tuple_cost = 0")
        conn.exec_driver_sql("SET min_parallel_table_scan_size = 0")
        assert any("Gather" in line for line in conn.exec_driver_sql(count).scalars())
        dialect_named("postgresql").session_setup(conn, 1000)
        assert conn.exec_driver_sql("SHOW max_parallel_workers_per_gather").scalar() == "0"
        assert not any("Gather" in line for line in conn.exec_driver_sql(count).scalars())


# --- values as the driver writes them (found by review: each went wrong once) ----------


def _erase_one_table(
    engine: sa.Engine, subject: object, calls: Calls, batch_size: int = 2
) -> ErasureReport:
    plan = build_plan(reflect(engine), ["tenant"])
    report = erase(engine, plan, subject, ExecutionOptions(batch_size=batch_size))
    assert calls.runs, "the server-side loop did not run"
    return report


def _rows(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT id, tenant FROM t")
        return sorted((i, bytes(t) if isinstance(t, memoryview) else t) for i, t in rows)


def test_a_bytea_subject_is_the_bytes_the_client_would_send(
    pg: TargetDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The four bytes ``\\x41`` written as a plain string literal would read as hex for
    ``A``: the loop erased the other subject's rows and left the subject's."""
    pg.run("CREATE TABLE t (id bigint PRIMARY KEY, tenant bytea NOT NULL)")
    with pg.engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO t VALUES (:i, :t)"),
            [{"i": i, "t": b"\\x41" if i % 2 else b"A"} for i in range(10)],
        )
    report = _erase_one_table(pg.engine, b"\\x41", Calls(monkeypatch))
    assert report.verified
    assert report.total_rows == 5
    assert _rows(pg.engine) == [(i, b"A") for i in range(0, 10, 2)]


def test_backslashes_without_standard_conforming_strings(
    pg: TargetDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``standard_conforming_strings = off`` a backslash in a literal escapes:
    ``'a\\b'`` is a and a backspace. Subject and keyset values must keep theirs."""
    db_name = sa.make_url(pg.url).database
    pg.run(f'ALTER DATABASE "{db_name}" SET standard_conforming_strings = off')
    engine = create_engine(pg.url)
    monkeypatch.setattr(server_batches, "_LOOP_SECONDS", 0.0)  # keyset values go between calls
    try:
        with engine.begin() as conn:
            assert conn.exec_driver_sql("SHOW standard_conforming_strings").scalar() == "off"
            conn.exec_driver_sql("CREATE TABLE t (id text PRIMARY KEY, tenant text NOT NULL)")
            conn.execute(
                sa.text("INSERT INTO t VALUES (:i, :t)"),
                [{"i": f"k{i}\\'\\x", "t": ("a\\b", "a\x08", "ab")[i % 3]} for i in range(12)],
            )
        report = _erase_one_table(engine, "a\\b", Calls(monkeypatch))
        assert report.verified
        assert report.total_rows == 4
        kept = [(f"k{i}\\'\\x", ("a\\b", "a\x08", "ab")[i % 3]) for i in range(12) if i % 3]
        assert _rows(engine) == sorted(kept)
    finally:
        engine.dispose()


def test_a_date_subject_given_as_text(pg: TargetDB, monkeypatch: pytest.MonkeyPatch) -> None:
    """Subjects often arrive as strings (CLI, messages): a date column's subject too."""
    pg.run(
        "CREATE TABLE t (id bigint PRIMARY KEY, tenant date NOT NULL)",
        "INSERT INTO t SELECT g, DATE '2024-01-01' + mod(g, 2) FROM generate_series(1, 6) g",
    )
    report = _erase_one_table(pg.engine, "2024-01-02", Calls(monkeypatch))
    assert report.verified
    assert report.total_rows == 3
    assert {str(t) for _, t in _rows(pg.engine)} == {"2024-01-01"}


@pytest.mark.parametrize(("timeout", "in_server"), [("150ms", False), ("10s", True)])
def test_a_statement_timeout_bounds_the_loop(
    pg: TargetDB, monkeypatch: pytest.MonkeyPatch, timeout: str, in_server: bool
) -> None:
    """A call of the loop is one statement: under a short statement timeout the batches
    go from the client (the loop was cancelled, and retried forever); under a long one
    the loop runs, each call well inside it."""
    db_name = sa.make_url(pg.url).database
    pg.run(
        "CREATE TABLE t (id bigint PRIMARY KEY, tenant int NOT NULL)",
        "INSERT INTO t SELECT g, mod(g, 2) FROM generate_series(1, 60000) g",
        "CREATE INDEX ON t (tenant)",
        f"ALTER DATABASE \"{db_name}\" SET statement_timeout = '{timeout}'",
    )
    engine = create_engine(pg.url)
    calls = Calls(monkeypatch)
    try:
        plan = build_plan(reflect(engine), ["tenant"])
        report = erase(engine, plan, 1, ExecutionOptions(batch_size=500))
    finally:
        engine.dispose()
    assert report.verified
    assert report.total_rows == 30000
    assert bool(calls.runs) is in_server


def test_the_cli_runs_batches_in_the_server_unless_told_not_to(
    pg: TargetDB,
    pg_twin: TargetDB,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``eraser erase`` runs the loop by default and never with ``--no-server-batches``;
    both erase the same rows, verified, and say where the batches ran."""
    _load(pg)
    _load(pg_twin)
    calls = Calls(monkeypatch)
    args = ["--subject-column", "tenant_id", "--subject-column", "tenants.id"]
    args += ["--subject", SUBJECT, "--batch-size", "4", "--json", "--progress", "never", "--yes"]
    assert main(["erase", "--db", pg.url, *args]) == EXIT_OK
    served = json.loads(capsys.readouterr().out)
    in_server = len(calls.runs)
    assert main(["erase", "--db", pg_twin.url, *args, "--no-server-batches"]) == EXIT_OK
    by_client = json.loads(capsys.readouterr().out)
    assert in_server > 0
    assert len(calls.runs) == in_server
    assert served["verified"]
    assert by_client["verified"]
    assert served["tables"] == by_client["tables"]
    assert "public.orders" in served["batched_in_server"]
    assert by_client["batched_in_server"] == []
    assert pg.snapshot(*_tables(pg)) == pg_twin.snapshot(*_tables(pg_twin))


def test_a_service_registered_without_server_batches_keeps_them_on_the_worker(
    pg: TargetDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``server_batches = false`` in the registry reaches the engine."""
    _load(pg)
    calls = Calls(monkeypatch)
    service = Service(url_env="UNUSED", batch_size=4, server_batches=False)
    columns = ["tenant_id", "tenants.id"]
    report = run_service(pg.engine, "shop", service, "tenant", columns, SUBJECT, False)
    assert report.verified
    assert report.total_rows == 14 + 28 + 56 + 56 + 28 + 14 + 1
    assert report.batched_in_server == []
    assert calls.runs == []
    assert _subject_rows(pg) == {"Customer": 0, "orders": 0, "order line": 0}
