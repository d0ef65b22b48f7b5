"""Issue 20, defect class 6 on MariaDB: strongly connected groups of five tables.

* A ring of five tables with a second edge out of each (``t_i -> t_{i+1}``,
  ``t_i -> t_{i+2}``) cannot be erased at all, even with one row per table: the
  membership statement has more WITH elements than MariaDB takes (error 4003), a
  limit of the statement's shape, not of the data.
* Rings of five (plain, with a chord, with an edge back) and 737 rows a table, each
  of the subject's rows in ``t0`` referencing one in ``t1`` (depth 1): an unrolled
  membership statement on such a group once grew MariaDB by about 1 GB a second
  until the kernel killed the server. Here every session Eraser opens carries
  ``max_statement_time``, so the server stops such a statement after a few seconds;
  the test asserts that none of Eraser's statements needed stopping (the server's
  ``Max_statement_time_exceeded`` counter did not move).
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from models.erasure import TableAction, TablePolicy
from tests.conftest import TargetDB
from tests.differential.erasure import erase_subject
from tests.differential.sessions import bounded_engine, bounded_url
from tests.differential.sql_case import Rows, run, tables
from worker.catalog.reflection import reflect
from worker.database import create_engine
from worker.exceptions import EraserError
from worker.execution.erasure import dry_run, erase
from worker.planning.building import build_plan

TABLES = [f"t{i}" for i in range(5)]


def _ring(edges: dict[int, list[int]], rows: int) -> list[str]:
    """Five tables, ``t{i}.t{j}_id NULL -> t{j}`` for each j in ``edges[i]``; ``rows``
    rows a table, tenant 1 for even ids and 2 for odd ones."""
    out = []
    for i in range(5):
        cols = "".join(f", t{j}_id INTEGER NULL, KEY (t{j}_id)" for j in edges[i])
        out.append(
            f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL,"
            f" KEY (tenant_id){cols}) ENGINE=InnoDB"
        )
    out += [
        f"ALTER TABLE t{i} ADD FOREIGN KEY (t{j}_id) REFERENCES t{j} (id)"
        for i in range(5)
        for j in edges[i]
    ]
    out += [
        f"INSERT INTO t{i} (id, tenant_id) SELECT seq, 2 - MOD(seq + 1, 2) FROM seq_1_to_{rows}"
        for i in range(5)
    ]
    return out


def _others(before: dict[str, Rows]) -> dict[str, Rows]:
    """The cascade oracle's outcome here: tenant 2's rows, as they were."""
    return {t: [r for r in rows if r[1] == 2] for t, rows in before.items()}


@pytest.mark.mysql
def test_five_table_group_with_one_row_each(mysql: TargetDB) -> None:
    run(mysql.url, _ring({i: [(i + 1) % 5, (i + 2) % 5] for i in range(5)}, 2))
    before = tables(mysql.url, TABLES)
    erase_subject(mysql.url, ["tenant_id"], 2)
    after = tables(mysql.url, TABLES)
    assert after == {t: [r for r in rows if r[1] == 1] for t, rows in before.items()}


def _statements_stopped(url: str) -> int:
    engine = bounded_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text("SHOW GLOBAL STATUS LIKE 'Max_statement_time_exceeded'"))
            return int(row.one()[1])
    finally:
        engine.dispose()


#: Five-table groups: a ring, a ring with a chord, a ring with an edge back.
SHAPES = {
    "ring": {i: [(i + 1) % 5] for i in range(5)},
    "chord": {i: [(i + 1) % 5] + ([2] if i == 0 else []) for i in range(5)},
    "back": {i: [(i + 1) % 5] + ([1] if i == 2 else []) for i in range(5)},
}


@pytest.mark.mysql
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_unrolled_membership_statement_is_bounded(mysql: TargetDB, shape: str) -> None:
    """Only the bound is asserted here: an erasure (the cascade's rows) or a refusal
    that wrote nothing are both fine; a statement the server had to stop is not."""
    run(mysql.url, [*_ring(SHAPES[shape], 737), "UPDATE t0 SET t1_id = id"])
    before = tables(mysql.url, TABLES)
    stopped = _statements_stopped(mysql.url)
    try:
        # Five seconds a statement: at the growth seen, a runaway costs a few GB.
        erase_subject(mysql.url, ["tenant_id"], 1, statement_seconds=5)
    except EraserError:
        assert tables(mysql.url, TABLES) == before, "refused after writing"
    else:
        assert tables(mysql.url, TABLES) == _others(before)
    finally:
        assert _statements_stopped(mysql.url) == stopped, "the server had to stop a statement"


@pytest.mark.mysql
def test_five_table_group_found_by_the_differential_test(mysql: TargetDB) -> None:
    """Shrunk from a random schema: t0 -> t6 -> t4 -> t1 -> t0, t1 <-> t2, t6 -> t1
    (CASCADE, NO ACTION, RESTRICT mixed). The subject has no row at all, yet the dry
    run fails: the limit comes from the statement's shape alone."""
    run(
        mysql.url,
        [
            "CREATE TABLE t0 (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL,"
            " t6_id INTEGER, KEY (tenant_id), KEY (t6_id))",
            "CREATE TABLE t1 (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL,"
            " t0_id INTEGER NOT NULL, t2_id INTEGER, KEY (tenant_id), KEY (t0_id), KEY (t2_id))",
            "CREATE TABLE t2 (id INTEGER PRIMARY KEY, t1_id INTEGER NOT NULL, KEY (t1_id))",
            "CREATE TABLE t4 (id INTEGER PRIMARY KEY, t1_id INTEGER, KEY (t1_id))",
            "CREATE TABLE t6 (id INTEGER PRIMARY KEY, t4_id INTEGER NOT NULL,"
            " t1_id INTEGER NOT NULL, KEY (t4_id), KEY (t1_id))",
            "ALTER TABLE t1 ADD FOREIGN KEY (t0_id) REFERENCES t0 (id) ON DELETE CASCADE",
            "ALTER TABLE t2 ADD FOREIGN KEY (t1_id) REFERENCES t1 (id) ON DELETE CASCADE",
            "ALTER TABLE t4 ADD FOREIGN KEY (t1_id) REFERENCES t1 (id) ON DELETE CASCADE",
            "ALTER TABLE t6 ADD FOREIGN KEY (t4_id) REFERENCES t4 (id)",
            "ALTER TABLE t6 ADD FOREIGN KEY (t1_id) REFERENCES t1 (id) ON DELETE RESTRICT",
            "ALTER TABLE t1 ADD FOREIGN KEY (t2_id) REFERENCES t2 (id) ON DELETE CASCADE",
            "ALTER TABLE t0 ADD FOREIGN KEY (t6_id) REFERENCES t6 (id) ON DELETE CASCADE",
            "INSERT INTO t0 VALUES (5, 3, NULL)",
            "INSERT INTO t1 VALUES (1, 3, 5, NULL)",
            "INSERT INTO t2 VALUES (1, 1)",
            "INSERT INTO t4 VALUES (1, 1)",
            "INSERT INTO t6 VALUES (3, 1, 1)",
        ],
    )
    names = ["t0", "t1", "t2", "t4", "t6"]
    before = tables(mysql.url, names)
    assert erase_subject(mysql.url, ["tenant_id"], 1, count_only=True).total_rows == 0
    assert erase_subject(mysql.url, ["tenant_id"], 1).total_rows == 0
    assert tables(mysql.url, names) == before


def _chain(rows: int) -> list[str]:
    """A ring of five with a chord (``t_i -> t_{i+1}``, ``t_i -> t_{i+2}``) and one
    chain of ``rows`` rows going round it: only the first holds the subject's tenant,
    each next row references the one before, and a row of another tenant hangs off
    every tenth."""
    out = []
    for i in range(5):
        cols = "".join(f", t{j}_id INTEGER NULL, KEY (t{j}_id)" for j in ((i + 1) % 5, (i + 2) % 5))
        out.append(
            f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, tenant_id INTEGER NULL,"
            f" KEY (tenant_id){cols}) ENGINE=InnoDB"
        )
    out += [
        f"ALTER TABLE t{i} ADD FOREIGN KEY (t{j}_id) REFERENCES t{j} (id)"
        for i in range(5)
        for j in ((i + 1) % 5, (i + 2) % 5)
    ]
    out.append("INSERT INTO t0 (id, tenant_id) VALUES (1, 7)")
    for k in range(2, rows + 1):
        table, before = (-(k - 1)) % 5, (-(k - 2)) % 5
        out.append(f"INSERT INTO t{table} (id, t{before}_id) VALUES ({k}, {k - 1})")
    out += [f"INSERT INTO t{i} (id, tenant_id) VALUES ({1000 + i}, 8)" for i in range(5)]
    return out


def _longest_statement(url: str, rows: int) -> tuple[int, int]:
    """The longest statement an erasure of the chain sent, and the rows it erased."""
    run(url, ["SET FOREIGN_KEY_CHECKS = 0", "DROP TABLE IF EXISTS t0, t1, t2, t3, t4"])
    run(url, _chain(rows))
    longest = 0
    engine = create_engine(bounded_url(url, 5), existing=True)

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _measure(*args: object) -> None:
        nonlocal longest
        statement = args[2]
        assert isinstance(statement, str)
        longest = max(longest, len(statement))

    try:
        plan = build_plan(reflect(engine, None), ["tenant_id"])
        report = erase(engine, plan, 7)
    finally:
        engine.dispose()
    assert report.verified
    left = tables(url, TABLES)
    assert sorted(r[0] for rows_ in left.values() for r in rows_) == [1000, 1001, 1002, 1003, 1004]
    return longest, report.total_rows


@pytest.mark.mysql
def test_statements_do_not_grow_with_the_depth_of_the_data(mysql: TargetDB) -> None:
    """A chain going round the group twice and one going round it 60 times (past the
    48 times an unrolled statement followed, and 300 levels deep for the walk): both
    are erased, and the longest statement grows only by the keys it names (each
    member key once), not with the depth."""
    shallow, shallow_rows = _longest_statement(mysql.url, 10)
    deep, deep_rows = _longest_statement(mysql.url, 300)
    assert (shallow_rows, deep_rows) == (10, 300)
    # A key in an IN list costs under 20 characters of placeholder: 58 per table more.
    assert deep < shallow + 58 * 20
    assert deep < 5_000


@pytest.mark.mysql
def test_an_anonymized_table_in_the_group_is_verified_by_key(mysql: TargetDB) -> None:
    """t2 anonymized (its references cleared): every table of the group is then
    verified with its whole membership, which on MariaDB was an unrolled statement
    doubling with each level of the chorded ring; it names the rows by key now."""
    run(mysql.url, _chain(40))
    engine = create_engine(bounded_url(mysql.url, 5), existing=True)
    cleared = TablePolicy(action=TableAction.ANONYMIZE, set={"t3_id": None, "t4_id": None})
    try:
        plan = build_plan(reflect(engine, None), ["tenant_id"], {"t2": cleared})
        counted = dry_run(engine, plan, 7)
        report = erase(engine, plan, 7)
    finally:
        engine.dispose()
    assert report.verified
    left = tables(mysql.url, TABLES)
    # The chain's t2 rows (ids 4, 9, ..., 39) stay, their references cleared.
    assert left["t2"] == [*[(k, None, None, None) for k in range(4, 41, 5)], (1002, 8, None, None)]
    assert [len(left[t]) for t in TABLES] == [1, 1, 9, 1, 1]
    assert report.total_rows == counted.total_rows == 40 - 8


@pytest.mark.mysql
def test_the_pre_flight_reads_run_under_a_statement_time_limit(mysql: TargetDB) -> None:
    """A session without a limit gets ``max_statement_time`` for the level-by-level
    look-ups and the pre-flight checks, and its own value back after them."""
    run(mysql.url, _chain(10))
    engine = create_engine(mysql.url, existing=True)
    sent: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _record(*args: object) -> None:
        statement = args[2]
        assert isinstance(statement, str)
        sent.append(statement)

    try:
        plan = build_plan(reflect(engine, None), ["tenant_id"])
        assert erase(engine, plan, 7).verified
    finally:
        engine.dispose()
    limits = [s for s in sent if s.startswith("SET SESSION max_statement_time")]
    assert limits[0] == "SET SESSION max_statement_time = 300"
    assert limits[-1].startswith("SET SESSION max_statement_time = 0")
    first_limit = sent.index(limits[0])
    first_look_up = next(i for i, s in enumerate(sent) if "t1_id IN" in s)
    assert first_limit < first_look_up
