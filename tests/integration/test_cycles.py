"""Foreign-key cycles (``worker.planning.cycles``, ``worker.execution.cycles``): trees of
any depth, two-table cycles on every database, chains going round a cycle many times,
and self-references among the subject's own rows.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.conftest import TargetDB
from tests.integration.known_rows import Data, child_table, col, run, tenant_child_table
from tests.integration.outcomes import SUBJECT, dump, pg_erase, rows
from worker.catalog.reflection import reflect
from worker.database import create_engine
from worker.exceptions import CrossSubjectReference, UnsatisfiablePlan
from worker.execution import cycle_members
from worker.execution.erasure import dry_run, erase
from worker.execution.options import ExecutionOptions
from worker.planning.building import build_plan
from worker.planning.model import CycleStrategy


def _cycle_chain(db: TargetDB, rounds: int) -> None:
    """a(1) holds the subject; b(i) references a(i), a(i + 1) references b(i): a chain of
    2 * rounds + 1 subject rows going round the cycle a <-> b ``rounds`` times. c2 holds
    another subject's row referencing the chain's last a row; k (kept) is empty."""
    a_to_b = "b_id INT NULL REFERENCES b (id)"
    b_to_a = "a_id INT NOT NULL" + (" REFERENCES a (id)" if db.backend == "sqlite" else "")
    db.run(
        f"CREATE TABLE b (id INT PRIMARY KEY, {b_to_a})",
        f"CREATE TABLE a (id INT PRIMARY KEY, tenant_id INT, {a_to_b})",
        "CREATE INDEX a_tenant ON a (tenant_id)",
    )
    if db.backend != "sqlite":
        db.run("ALTER TABLE b ADD CONSTRAINT b_to_a FOREIGN KEY (a_id) REFERENCES a (id)")
    db.run(
        "CREATE TABLE c2 (id INT PRIMARY KEY, tenant_id INT, a_id INT NOT NULL REFERENCES a (id))",
        "INSERT INTO a VALUES (1, 42, NULL), (1000, 7, NULL)",
    )
    with db.engine.begin() as conn:
        for i in range(1, rounds + 1):
            conn.execute(sa.text("INSERT INTO b VALUES (:i, :i)"), {"i": i})
            conn.execute(sa.text("INSERT INTO a VALUES (:n, NULL, :i)"), {"n": i + 1, "i": i})


@pytest.mark.parametrize("db", ["sqlite", "postgresql", "mysql"], indirect=True)
def test_a_chain_round_a_cycle_forty_times_is_counted_and_checked_in_full(db: TargetDB) -> None:
    """The cycle's membership was unrolled three times round: the dry run counted 7 of
    the chain's rows and the pre-flight missed another subject's row at its far end.
    (MariaDB, whose thread stack ended the unrolled statement at some 12 times round,
    follows the chain level by level.)"""
    rounds = 40
    _cycle_chain(db, rounds)
    db.run(f"INSERT INTO c2 VALUES (1, 7, {rounds + 1})")
    plan = build_plan(reflect(db.engine), ["a.tenant_id", "c2.tenant_id"])
    before = dump(db, "a", "b", "c2")
    with pytest.raises(CrossSubjectReference):
        dry_run(db.engine, plan, SUBJECT)
    with pytest.raises(CrossSubjectReference):
        erase(db.engine, plan, SUBJECT)
    assert dump(db, "a", "b", "c2") == before
    db.run("DELETE FROM c2")
    assert dry_run(db.engine, plan, SUBJECT).total_rows == 2 * rounds + 1
    report = erase(db.engine, plan, SUBJECT, ExecutionOptions(batch_size=7))
    assert report.verified
    assert report.total_rows == 2 * rounds + 1
    assert rows(db, "a") == [(1000, 7, None)]
    assert rows(db, "b") == []


@pytest.mark.parametrize(
    ("limit", "value", "why"),
    [
        ("MAX_LEVELS", 10, "more than 10 deep"),
        ("MAX_KEYS", 20, "more than 20 rows belong to it by reference only"),
        ("MAX_FOLLOWED", 20, "more than 20 rows in it"),
    ],
)
def test_a_chain_past_the_level_by_level_limits_is_refused(
    mysql: TargetDB, monkeypatch: pytest.MonkeyPatch, limit: str, value: int, why: str
) -> None:
    """MariaDB follows a cycle level by level, each row found held in memory and each
    row past level 0 named by key later: past its limits the plan is refused before
    anything is touched, not run with a partial pre-flight."""
    monkeypatch.setattr(cycle_members, limit, value)
    _cycle_chain(mysql, 30)
    plan = build_plan(reflect(mysql.engine), ["a.tenant_id", "c2.tenant_id"])
    before = dump(mysql, "a", "b", "c2")
    for entry_point in (dry_run, erase):
        with pytest.raises(UnsatisfiablePlan, match=why):
            entry_point(mysql.engine, plan, SUBJECT)
    assert dump(mysql, "a", "b", "c2") == before


@pytest.mark.parametrize("server_batches", [True, False], ids=["server", "client"])
def test_pg_set_null_self_reference_among_the_subjects_rows(
    pg: TargetDB, server_batches: bool
) -> None:
    """A SET NULL self-reference between the subject's rows recursed without end."""
    pg.run(
        "CREATE TABLE cat (id int PRIMARY KEY,"
        " parent_id int REFERENCES cat ON DELETE SET NULL, tenant_id int)",
        "INSERT INTO cat VALUES (7, 7, 42), (8, 9, 42), (9, 8, 42), (10, 7, 7), (11, NULL, 7)",
    )
    expected, report = pg_erase(pg, ["tenant_id"], server_batches)
    assert report.verified
    assert report.total_rows == expected == 3
    assert rows(pg, "cat") == [(10, None, 7), (11, None, 7)]


def test_pg_two_self_references_on_one_table(pg: TargetDB) -> None:
    """Two self-referencing keys made the tree CTE ``(base UNION r1) UNION r2``, which
    PostgreSQL refuses (InvalidRecursion): every dry run and erasure failed."""
    pg.run(
        "CREATE TABLE emp (id int PRIMARY KEY, tenant_id int,"
        " manager_id int REFERENCES emp, mentor_id int REFERENCES emp)",
        "INSERT INTO emp VALUES (1, 42, NULL, NULL), (2, 42, 1, 1), (3, 7, NULL, NULL),"
        " (4, NULL, 2, 3)",
    )
    expected, report = pg_erase(pg, ["tenant_id"])
    assert report.verified
    assert report.total_rows == expected == 3
    assert rows(pg, "emp") == [(3, 7, None, None)]


def test_self_reference_deeper_than_thirty(db: TargetDB) -> None:
    md = sa.MetaData()
    cats = tenant_child_table(
        md, "categories", "parent_id", "categories.id", tenant_nullable=True, nullable=True
    )
    db.create(md)
    data = Data(db)
    next_id = 1
    for owner, depth in ((1, 40), (2, 35)):
        parent = None
        for level in range(depth):
            # Only the root carries the tenant: descendants are reached by recursion.
            tenant = owner if level == 0 else None
            data.add(cats, owner, id=next_id, tenant_id=tenant, parent_id=parent)
            # A side branch at every level, so the tree is not a bare chain.
            data.add(cats, owner, id=next_id + 1, tenant_id=None, parent_id=next_id)
            parent = next_id
            next_id += 2
    data.load()
    _, report = run(db, ["tenant_id"])
    assert report.total_rows == data.subject_rows() == 80
    assert data.snapshot() == data.expected()


def test_not_null_self_reference_with_self_pointing_roots(db: TargetDB) -> None:
    md = sa.MetaData()
    nodes = tenant_child_table(md, "nodes", "parent_id", "nodes.id")
    db.create(md)
    data = Data(db)
    for owner, base in ((1, 0), (2, 100)):
        data.add(nodes, owner, id=base + 1, tenant_id=owner, parent_id=base + 1)
        for i in range(2, 32):
            data.add(nodes, owner, id=base + i, tenant_id=owner, parent_id=base + i - 1)
    data.load()
    run(db, ["tenant_id"], batch_size=4)
    assert data.snapshot() == data.expected()


def _cycle_schema(
    db: TargetDB, nullable: bool, deferrable: bool
) -> tuple[Data, sa.Table, sa.Table]:
    md = sa.MetaData()
    stores = sa.Table(
        "stores",
        md,
        col("id", sa.Integer, primary_key=True),
        col("tenant_id", sa.Integer, nullable=False, index=True),
        col("manager_id", sa.Integer, nullable=nullable, index=True),
    )
    employees = child_table(md, "employees", "store_id", "stores.id")
    closing = sa.ForeignKeyConstraint(
        ["manager_id"],
        ["employees.id"],
        name="stores_manager_fk",
        deferrable=True if deferrable else None,
        initially="DEFERRED" if deferrable else None,
    )
    if db.backend == "sqlite":
        stores.append_constraint(closing)
    db.create(md)
    data = Data(db)
    for owner, base in ((1, 0), (2, 100)):
        for s in range(1, 6):
            store = base + s
            data.add(stores, owner, id=store, tenant_id=owner, manager_id=store * 10)
            for e in range(3):
                data.add(employees, owner, id=store * 10 + e, store_id=store)
    with db.engine.begin() as conn:
        if db.backend == "sqlite":
            conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
        conn.execute(sa.insert(stores), [r for r, _ in data.rows["stores"]])
        conn.execute(sa.insert(employees), [r for r, _ in data.rows["employees"]])
    data.tables = [stores, employees]
    if db.backend != "sqlite":
        deferral = (
            " DEFERRABLE INITIALLY DEFERRED" if deferrable and db.backend == "postgresql" else ""
        )
        db.run(
            "ALTER TABLE stores ADD CONSTRAINT stores_manager_fk FOREIGN KEY (manager_id) "
            f"REFERENCES employees (id){deferral}"
        )
    return data, stores, employees


@pytest.mark.parametrize(
    "nullable",
    [
        True,  # a nullable reference breaks the cycle
        False,  # NOT NULL both ways: writable CTE (PG), defer pragma (SQLite), refused (MySQL)
    ],
)
def test_two_table_cycle(db: TargetDB, nullable: bool) -> None:
    _check_cycle(db, nullable, deferrable=False)


def test_two_table_cycle_with_a_deferrable_constraint(pg: TargetDB) -> None:
    """Only PostgreSQL lets a constraint be DEFERRABLE by choice."""
    _check_cycle(pg, nullable=False, deferrable=True)


def _check_cycle(db: TargetDB, nullable: bool, deferrable: bool) -> None:
    data, _, _ = _cycle_schema(db, nullable, deferrable)
    catalog = reflect(db.engine)
    if not nullable and db.backend == "mysql":
        with pytest.raises(UnsatisfiablePlan, match="stores"):
            build_plan(catalog, ["tenant_id"])
        assert data.snapshot() == data.expected(lambda t, r, o: r)
        return
    plan = build_plan(catalog, ["tenant_id"])
    (cycle,) = plan.cycles
    expected_strategy = {
        (True, False): CycleStrategy.NULLIFY,
        (False, False): CycleStrategy.WRITABLE_CTE
        if db.backend == "postgresql"
        else CycleStrategy.SQLITE_DEFER,
        (False, True): CycleStrategy.DEFERRED,
    }[(nullable, deferrable)]
    assert cycle.strategy is expected_strategy
    _, report = run(db, ["tenant_id"], batch_size=2)
    assert report.total_rows == data.subject_rows() == 20
    assert data.snapshot() == data.expected()


@pytest.mark.parametrize("own_limit", [False, True], ids=["none", "session's own"])
def test_pg_pre_flight_reads_run_under_a_statement_timeout(pg: TargetDB, own_limit: bool) -> None:
    """The pre-flight's transaction (and a dry run's counts) get ``statement_timeout``
    for itself where the session has none; a session's own limit stays."""
    _cycle_chain(pg, 3)
    url = pg.url + ("?options=-c%20statement_timeout%3D5000" if own_limit else "")
    engine = create_engine(url, existing=True)
    limits: list[object] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _record(*args: object) -> None:
        params = args[3]
        if isinstance(params, dict) and "300s" in params.values():
            limits.append(sorted(map(str, params.values())))

    try:
        plan = build_plan(reflect(engine), ["a.tenant_id", "c2.tenant_id"])
        dry_run(engine, plan, SUBJECT)
        assert erase(engine, plan, SUBJECT).verified
        with engine.connect() as conn:
            after = conn.execute(sa.text("SHOW statement_timeout")).scalar_one()
    finally:
        engine.dispose()
    if own_limit:
        assert limits == []
        assert after == "5s"
    else:
        assert limits == [["300s", "True", "statement_timeout"]] * 2
        assert after == "0"
