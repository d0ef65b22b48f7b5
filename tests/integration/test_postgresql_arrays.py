"""Key lists sent to PostgreSQL as one array literal (``worker.dialects.pg_array``).

The engine passes every batch's keys as ``CAST('{...}' AS BIGINT[])`` or ``TEXT[]``
instead of the driver's ``ARRAY[...]`` expression. The literal is built by hand, so
these tests check that whatever a key may hold comes back from the server exactly as
it went in, that types the literal cannot carry are bound as before, and that an
erasure over keys full of the characters array syntax uses still removes exactly the
subject's rows on every PostgreSQL role the engine runs as.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from tests.conftest import TargetDB, make_db
from tests.integration.test_hard_schemas import Data, col, run
from worker.dialects.postgresql_arrays import Tid, pg_array

#: Strings that mean something inside an array literal or to the SQL around it.
AWKWARD = [
    "plain",
    "",
    " padded ",
    'a"quote',
    "back\\slash",
    "\\",
    '\\"',
    "comma,inside",
    "{braces}",
    "}",
    "NULL",
    "null",
    "it's",
    "semi;colon",
    "new\nline",
    "tab\tand space",
    "ünïcødé ✓",
    "%(name)s",
    "%s",
    "$1",
]


@pytest.fixture(params=["postgresql", "postgresql-plain"])
def pgdb(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    yield from make_db(request.param, tmp_path)


def _unnest(db: TargetDB, array: sa.ColumnElement[Any]) -> list[Any]:
    with db.engine.connect() as conn:
        return list(conn.execute(sa.select(sa.func.unnest(array))).scalars())


def _compiled(array: sa.ColumnElement[Any]) -> str:
    return str(array.compile(dialect=postgresql.psycopg2.dialect()))  # type: ignore[attr-defined]


def test_strings_round_trip_exactly(pgdb: TargetDB) -> None:
    array = pg_array(AWKWARD, sa.String(40))
    assert "CAST(" in _compiled(array)
    assert "TEXT[]" in _compiled(array)
    assert _unnest(pgdb, array) == AWKWARD


def test_none_becomes_sql_null_not_the_string(pgdb: TargetDB) -> None:
    assert _unnest(pgdb, pg_array(["NULL", None, "x"], sa.Text())) == ["NULL", None, "x"]
    assert _unnest(pgdb, pg_array([1, None, 3], sa.Integer())) == [1, None, 3]


def test_integers_go_as_bigint_whatever_the_column_width(pgdb: TargetDB) -> None:
    values = [0, -1, 2**31 - 1, 2**31, -(2**63), 2**63 - 1]
    for element in (sa.SmallInteger(), sa.Integer(), sa.BigInteger()):
        array = pg_array(values, element)
        assert "BIGINT[]" in _compiled(array)
        assert _unnest(pgdb, array) == values


def test_row_addresses(pgdb: TargetDB) -> None:
    pgdb.run("CREATE TABLE t (v int)", "INSERT INTO t SELECT generate_series(1, 5)")
    with pgdb.engine.connect() as conn:
        tids = list(conn.execute(sa.text("SELECT ctid::text FROM t ORDER BY v")).scalars())
        found = conn.execute(
            sa.select(sa.literal_column("v"))
            .select_from(sa.table("t"))
            .where(sa.literal_column("ctid", Tid()) == sa.any_(pg_array(tids[1:4], Tid())))
            .order_by(sa.literal_column("v"))
        ).scalars()
        assert list(found) == [2, 3, 4]


@pytest.mark.parametrize(
    ("element", "values"),
    [
        (sa.CHAR(3), ["ab", "c"]),  # bpchar compared as text would miss its index
        (sa.Numeric(), [Decimal("1.5"), Decimal("2")]),
        (sa.Date(), []),
        (sa.Uuid(), [uuid.uuid4()]),
        (sa.Integer(), [True, False]),  # a bool is an int to Python, not to PostgreSQL
        (sa.Integer(), [1.0]),
        (sa.Text(), [b"bytes"]),
    ],
)
def test_what_the_literal_cannot_carry_is_bound_as_a_list(
    element: sa.types.TypeEngine[Any], values: list[Any]
) -> None:
    array = pg_array(values, element)
    assert isinstance(array, sa.BindParameter)
    assert array.value == values


def test_erasure_over_awkward_text_keys(pgdb: TargetDB) -> None:
    """Text primary and foreign keys made of array syntax: exactly tenant 1 goes, with
    the keys of its rows sent as literals through every sweep and probe."""
    md = sa.MetaData()
    accounts = sa.Table(
        "accounts",
        md,
        col("code", sa.String(40), primary_key=True),
        col("tenant_id", sa.Integer, nullable=False, index=True),
    )
    notes = sa.Table(
        "notes",
        md,
        col("id", sa.Integer, primary_key=True),
        col("account", sa.String(40), sa.ForeignKey("accounts.code"), nullable=False, index=True),
    )
    pgdb.create(md)
    data = Data(pgdb)
    note = 0
    for i, word in enumerate(AWKWARD):
        for owner in (1, 2):
            code = f"{owner}:{word}" if i % 2 else f"{word}/{owner}"
            data.add(accounts, owner, code=code, tenant_id=owner)
            for _ in range(3):
                note += 1
                data.add(notes, owner, id=note, account=code)
    data.load()
    _, report = run(pgdb, ["tenant_id"], batch_size=4)
    assert report.total_rows == data.subject_rows() == len(AWKWARD) * 4
    assert data.snapshot() == data.expected()


def test_erasure_with_wide_parent_keys_and_narrow_references(pgdb: TargetDB) -> None:
    """A bigint parent key with an integer column referencing it: keys beyond the
    integer range (no child can hold them) must not break the cast of a batch."""
    pgdb.run(
        "CREATE TABLE parents (id bigint PRIMARY KEY, tenant_id int NOT NULL)",
        "CREATE INDEX ON parents (tenant_id)",
        "CREATE TABLE kids (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parents (id))",
        "CREATE INDEX ON kids (parent_id)",
        "INSERT INTO parents SELECT g, 1 + mod(g, 2) FROM generate_series(1, 20) g",
        "INSERT INTO parents SELECT 3000000000 + g, 1 + mod(g, 2) FROM generate_series(1, 20) g",
        "INSERT INTO kids SELECT g, 1 + mod(g, 20) FROM generate_series(1, 60) g",
    )
    md = sa.MetaData()
    md.reflect(pgdb.engine)
    before = pgdb.snapshot(md.tables["parents"], md.tables["kids"])
    _, report = run(pgdb, ["tenant_id"], batch_size=7)
    assert report.total_rows == 20 + 30
    after = pgdb.snapshot(md.tables["parents"], md.tables["kids"])
    assert after["parents"] == [r for r in before["parents"] if r[1] == 2]
    survivors = {r[0] for r in after["parents"]}
    assert after["kids"] == [r for r in before["kids"] if r[1] in survivors]
