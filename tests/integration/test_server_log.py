"""The subject's value never reaches the target database's server log (PostgreSQL under
its default logging: ``log_min_error_statement = error`` writes the text of every
statement that fails).

Erasures with many batches given back by the server-side loop (another subject's row
swept along, a batch over its transaction budget), and failures of every kind a
routine erasure meets (a trigger that raises, a missing privilege, a lock timeout, a
foreign-key refusal), by the loop and by the client, for a text and an integer
subject; then the part of the server's log written meanwhile is scanned for the
values: 0 hits, and the failures' error lines are there (the scan is not vacuous).

The log is ``ERASER_TEST_PG_LOG`` (default: where Debian's ``pg_ctlcluster`` writes
PostgreSQL 15's). With ``ERASER_REQUIRE_SERVICES=1`` a missing or unreadable log
fails the test; otherwise it skips.

Key arrays and keyset bounds equal to the subject's value (a table keyed by it) reach
the server as reads of its session setting: the same values, no trace in the text.

MariaDB logs no statement text under its defaults (no general log, no slow log, an
error log without statements): an erasure that fails and one that succeeds there
leave no value in its error log (``ERASER_TEST_MYSQL_LOG``) either.
"""

from __future__ import annotations

import os
import secrets
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from tests.conftest import PG_ADMIN_URL, REQUIRE, TargetDB
from tests.integration.test_server_loop import Calls
from worker.catalog.reflection import reflect
from worker.database import create_engine
from worker.dialects import dialect_of
from worker.dialects.postgresql_arrays import pg_array
from worker.dialects.postgresql_session import SubjectNotBound
from worker.execution import server_batches
from worker.execution.erasure import erase
from worker.execution.options import ExecutionOptions, Progress
from worker.execution.serverloop import OVERFLOW, REFERENCED
from worker.faults import DatabaseFailure
from worker.planning.building import build_plan

LOG = Path(os.environ.get("ERASER_TEST_PG_LOG", "/var/log/postgresql/postgresql-15-main.log"))
MYSQL_LOG = Path(os.environ.get("ERASER_TEST_MYSQL_LOG", "/var/log/mysql/error.log"))

#: A text subject found nowhere else, with what quoting must survive (the log is
#: scanned for its first part, which any rendering of it holds as it is), and an
#: integer one (13 digits, random).
MARK = f"subj-{secrets.token_hex(8)}"
TEXT_SUBJECT = MARK + ' it\'s \\ "x" $$ %s {a,b}'
INT_SUBJECT = 7_000_000_000_000 + secrets.randbelow(10**12)

SCHEMA = """
CREATE TABLE tenants (id {key} PRIMARY KEY, name text);
CREATE TABLE orders (id bigint PRIMARY KEY, tenant_id {key} NOT NULL REFERENCES tenants(id));
CREATE TABLE order_lines (id bigint PRIMARY KEY, order_id bigint NOT NULL REFERENCES orders(id));
CREATE TABLE reviews (
    id bigint PRIMARY KEY, tenant_id {key} NOT NULL REFERENCES tenants(id),
    order_id bigint NOT NULL REFERENCES orders(id));
CREATE INDEX orders_tenant ON orders(tenant_id);
CREATE INDEX order_lines_order ON order_lines(order_id);
CREATE INDEX reviews_tenant ON reviews(tenant_id);
CREATE INDEX reviews_order ON reviews(order_id);
"""
#: The session settings where an erasure puts values.
SETTINGS = (
    "eraser.subject_text",
    "eraser.subject_bigint",
    "eraser.loop",
    "eraser.loop_last",
    "eraser.loop_gave",
)
#: A trigger that refuses to remove an order (a service's own rule).
REFUSING_TRIGGER = """
CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'orders are kept by policy'; END $$;
CREATE TRIGGER refuse BEFORE DELETE ON orders FOR EACH ROW EXECUTE FUNCTION refuse();
"""


class ServerLog:
    """What the server writes to its log from now on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.start = path.stat().st_size
            with path.open("rb"):
                pass
        except OSError as exc:
            message = f"the PostgreSQL server log {path} cannot be read ({exc.strerror})"
            if REQUIRE:
                pytest.fail(f"{message} and ERASER_REQUIRE_SERVICES=1")
            pytest.skip(message)

    def written(self) -> str:
        with self.path.open("rb") as f:
            f.seek(self.start)
            return f.read().decode("utf-8", "replace")


@pytest.fixture
def server_log() -> ServerLog:
    return ServerLog(LOG)


@pytest.fixture
def mysql_log() -> ServerLog:
    return ServerLog(MYSQL_LOG)


def _load(db: TargetDB, subject: Any, others: tuple[Any, ...], key: str) -> None:
    """Three tenants with 12 orders each, two lines an order."""
    db.run(*(sql for sql in SCHEMA.format(key=key).split(";") if sql.strip()))
    tenants = [subject, *others]
    rows: dict[str, list[dict[str, Any]]] = {"tenants": [], "orders": [], "order_lines": []}
    rows["tenants"] = [{"id": t, "name": f"tenant {i}"} for i, t in enumerate(tenants)]
    line = 0
    for i in range(36):
        rows["orders"].append({"id": i + 1, "tenant_id": tenants[i % 3]})
        for _ in range(2):
            line += 1
            rows["order_lines"].append({"id": line, "order_id": i + 1})
    md = sa.MetaData()
    md.reflect(db.engine)
    for name, values in rows.items():
        db.insert(md.tables[name], values)


def _erase(db: TargetDB, subject: Any, progress: Any = None, **options: Any) -> Any:
    plan = build_plan(reflect(db.engine), ["tenant_id", "tenants.id"])
    return erase(db.engine, plan, subject, ExecutionOptions(**options), progress)


def _fails(db: TargetDB, subject: Any, code: str, progress: Any = None, **options: Any) -> None:
    with pytest.raises(DatabaseFailure) as failed:
        _erase(db, subject, progress, **options)
    assert failed.value.code == code


def _errors_of(log: str, *databases: str) -> list[str]:
    """The ``ERROR`` lines the server logged for ``databases`` (the log's line prefix
    names the user and the database: ``%u@%d``)."""
    return [
        line
        for line in log.splitlines()
        if " ERROR:  " in line and any(f"@{name} " in line for name in databases)
    ]


def _hold(
    db: TargetDB, table: str, key: Any, locked: threading.Event, release: threading.Event
) -> None:
    with db.engine.connect() as conn, conn.begin():
        conn.execute(sa.text(f"SELECT 1 FROM {table} WHERE id = :i FOR UPDATE"), {"i": key})
        locked.set()
        release.wait(30)


def _with_lock_held(db: TargetDB, table: str, key: Any, subject: Any, **options: Any) -> None:
    """An erasure that times out on a lock another session holds on a row."""
    locked, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold, args=(db, table, key, locked, release), daemon=True)
    holder.start()
    assert locked.wait(10)
    try:
        _fails(db, subject, "55P03", lock_timeout_ms=200, **options)
    finally:
        release.set()
        holder.join(10)


def _scenarios(
    db: TargetDB, subject: Any, other: Any, monkeypatch: pytest.MonkeyPatch
) -> list[str | None]:
    """Handbacks, an overflow and failures by the loop and by the client; then the
    erasure that succeeds. Returns the codes the loop gave batches back with."""
    monkeypatch.setattr(server_batches, "_LOOP_SECONDS", 0.0)
    calls = Calls(monkeypatch)
    loop = {"batch_size": 2, "fk_checks": "eraser"}
    client = {**loop, "server_batches": False}
    # Another tenant's review of one of the subject's orders, written midway: the loop
    # gives its batch back, the client's way is refused by the database.
    injected: list[bool] = []

    def review(progress: Progress) -> None:
        if progress.table == "public.orders" and not injected:
            db.run(f"INSERT INTO reviews VALUES (1, {other}, 28)")
            injected.append(True)

    _fails(db, subject, "23503", review, **loop)
    assert injected
    db.run("DELETE FROM reviews")
    # A lock held by another session, on the loop's way and on the client's.
    _with_lock_held(db, "orders", 34, subject, **loop)
    _with_lock_held(db, "orders", 34, subject, **client)
    # A trigger that refuses, on both ways.
    db.run(REFUSING_TRIGGER)
    _fails(db, subject, "P0001", **loop)
    _fails(db, subject, "P0001", **client)
    db.run("DROP TRIGGER refuse ON orders")
    # The same on the subject's own row, keyed by the subject's value.
    db.run("CREATE TRIGGER refuse BEFORE DELETE ON tenants FOR EACH ROW EXECUTE FUNCTION refuse()")
    _fails(db, subject, "P0001", **loop)
    _fails(db, subject, "P0001", **client)
    db.run("DROP TRIGGER refuse ON tenants")
    _with_lock_held(db, "tenants", subject, subject, **loop)
    _with_lock_held(db, "tenants", subject, subject, **client)
    # A new order of the subject with more lines than a batch may sweep along: the
    # loop gives its batches back, and the erasure is done.
    with db.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO orders VALUES (100, :s)"), {"s": subject})
        conn.execute(
            sa.text("INSERT INTO order_lines SELECT 1000 + i, 100 FROM generate_series(1, 40) i")
        )
    before = len(calls.runs)
    quiet = ServerLog(LOG)
    report = _erase(db, subject, **loop)
    assert report.verified
    # The batches given back by this erasure that succeeded left no error in the log.
    assert OVERFLOW in [r.gave_back for r in calls.runs[before:]]
    assert _errors_of(quiet.written(), str(db.engine.url.database)) == []
    # No pooled session holds a value any more (every one of them, checked out at once).
    pooled = db.engine.pool.checkedin()  # type: ignore[attr-defined]
    assert pooled
    with ExitStack() as stack:
        for conn in [stack.enter_context(db.engine.connect()) for _ in range(pooled)]:
            held = conn.execute(
                sa.select(*(sa.func.current_setting(name, True) for name in SETTINGS))
            ).one()
            assert set(held) <= {None, ""}, held
    return [r.gave_back for r in calls.runs]


def _refused_privilege(plain: TargetDB, subject: Any, key: str) -> None:
    """A table of the service the role may read and not write: 42501, by the loop's
    way and the client's."""
    admin = create_engine(sa.make_url(plain.url).set(username=sa.make_url(PG_ADMIN_URL).username))
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(
                f"CREATE TABLE audit (id bigint PRIMARY KEY, tenant_id {key} NOT NULL)"
            )
            conn.exec_driver_sql("INSERT INTO audit VALUES (1, %s), (2, %s)", (subject, subject))
            conn.exec_driver_sql(f'GRANT SELECT ON audit TO "{plain.engine.url.username}"')
    finally:
        admin.dispose()
    _fails(plain, subject, "42501", batch_size=2)
    _fails(plain, subject, "42501", batch_size=2, server_batches=False)


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("subject", "other", "key"),
    [
        # A text subject.
        (TEXT_SUBJECT, "'someone else'", "text"),
        # An integer subject.
        (INT_SUBJECT, "42", "bigint"),
    ],
)
def test_the_server_log_never_holds_the_subject(
    pg: TargetDB,
    pg_plain: TargetDB,
    server_log: ServerLog,
    monkeypatch: pytest.MonkeyPatch,
    subject: Any,
    other: Any,
    key: str,
) -> None:
    others = ("someone else", "x") if key == "text" else (42, 43)
    _load(pg, subject, others, key)
    given_back = _scenarios(pg, subject, other, monkeypatch)
    assert REFERENCED in given_back
    assert given_back.count(OVERFLOW) >= 2
    pg_plain.run(f"CREATE TABLE tenants (id {key} PRIMARY KEY)")
    with pg_plain.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants VALUES (:s)"), {"s": subject})
    _refused_privilege(pg_plain, subject, key)
    written = server_log.written()
    errors = _errors_of(written, str(pg.engine.url.database), str(pg_plain.engine.url.database))
    # Every failure above was logged: 1 refusal, 4 lock timeouts, 4 trigger errors,
    # 2 privileges.
    assert len(errors) >= 11, errors
    assert written.count(MARK if subject == TEXT_SUBJECT else str(subject)) == 0


#: MariaDB's settings that would write statements (and values) to a log, as they are
#: by default.
MYSQL_DEFAULTS = {"general_log": "OFF", "slow_query_log": "OFF", "log_bin": "OFF"}


@pytest.mark.mysql
def test_mariadb_logs_no_value_under_its_defaults(mysql: TargetDB, mysql_log: ServerLog) -> None:
    with mysql.engine.connect() as conn:
        found: dict[str, str] = dict(
            conn.execute(
                sa.text("SHOW GLOBAL VARIABLES WHERE Variable_name IN :names").bindparams(
                    sa.bindparam("names", expanding=True)
                ),
                {"names": sorted(MYSQL_DEFAULTS)},
            ).all()
        )
        plugins = conn.execute(
            sa.text(
                "SELECT count(*) FROM information_schema.PLUGINS"
                " WHERE PLUGIN_NAME IN ('SQL_ERROR_LOG', 'SERVER_AUDIT')"
                " AND PLUGIN_STATUS = 'ACTIVE'"
            )
        ).scalar_one()
    if found != MYSQL_DEFAULTS or plugins:
        # (A shared server's global settings are not the test's to change.)
        pytest.skip(f"the server logs more than by default: {found}, {plugins} plugin(s)")
    _load(mysql, TEXT_SUBJECT, ("someone else", "x"), "varchar(64)")
    mysql.run(
        "CREATE TRIGGER refuse BEFORE DELETE ON orders FOR EACH ROW"
        " SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'orders are kept by policy'"
    )
    with pytest.raises(DatabaseFailure):
        _erase(mysql, TEXT_SUBJECT, batch_size=2)
    mysql.run("DROP TRIGGER refuse")
    assert _erase(mysql, TEXT_SUBJECT, batch_size=2).verified
    assert mysql_log.written().count(MARK) == 0


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("subject", "type_", "others"),
    [
        # Text keys: elements that need quoting around the subject's.
        (TEXT_SUBJECT, sa.Text(), ["a,b", 'q"uote', "back\\slash", "{}", None, "NULL", ""]),
        # Integer keys.
        (INT_SUBJECT, sa.BigInteger(), [1, -5, 10**12, None, INT_SUBJECT + 1]),
    ],
)
def test_keys_equal_to_the_subject_go_out_of_the_statement_text(
    pg: TargetDB, subject: Any, type_: sa.types.TypeEngine[Any], others: list[Any]
) -> None:
    """A key array (``pg_array``) and a keyset bound (a literal) holding the subject's
    value, on a session given the value: the server reads the same values, and the
    text the driver sent holds no trace of it."""
    values = [*others, subject, *others, subject]
    sent: list[bytes] = []

    def record(_conn: Any, cursor: Any, *_rest: Any) -> None:
        sent.append(bytes(cursor.query or b""))

    event.listen(pg.engine, "after_cursor_execute", record)
    try:
        with pg.engine.connect() as conn:
            dialect_of(conn).bind_subject(conn, [(type_, subject)])
            sent.clear()
            row = conn.execute(sa.select(pg_array(values, type_), sa.literal(subject, type_))).one()
    finally:
        event.remove(pg.engine, "after_cursor_execute", record)
    assert list(row) == [values, subject]
    mark = MARK if subject == TEXT_SUBJECT else str(subject)
    assert len(sent) == 1
    assert mark.encode() not in sent[0]


@pytest.mark.postgres
def test_a_session_not_given_the_subject_refuses_a_statement_that_reads_it(pg: TargetDB) -> None:
    """A cleared setting reads as an empty text, which must never be taken for the
    subject: such a statement is refused before it is sent, also on a pooled
    connection whose erasure has ended."""
    pg.run("CREATE TABLE notes (tenant_id text)", "INSERT INTO notes VALUES ('')")
    notes = sa.Table("notes", sa.MetaData(), sa.Column("tenant_id", sa.Text()))
    reads = sa.select(sa.func.count()).where(
        notes.c.tenant_id == dialect_of(pg.engine).session_value(sa.Text())
    )
    with pg.engine.connect() as conn:
        with pytest.raises(SubjectNotBound):
            conn.execute(reads)
        conn.rollback()
        dialect_of(conn).bind_subject(conn, [(sa.Text(), TEXT_SUBJECT)])
        assert conn.execute(reads).scalar_one() == 0
    with pg.engine.connect() as conn:  # the same pooled connection, cleared
        with pytest.raises(SubjectNotBound):
            conn.execute(reads)
