"""The ledger: a task's counts, kept in the target database by the batches themselves.

Every batch transaction of a task's execution also inserts one row into
``eraser_ledger`` in the target: (task, execution, seq, counts). It commits with the
batch or not at all, so it is the one record of what was removed that survives any
crash: a worker killed between two heartbeats, a connection lost while ``COMMIT`` was
on the wire, PostgreSQL's server-side loop committing batches after its client died.
The row holds ids and counts only, never a key or the subject's value.

``counts`` is JSON: ``{"table:action": rows}`` removed by that one transaction (a
batch run from the client), or, for a batch of the server-side loop, the running
tally of its call, ``{"call": id, "table:action": rows}``. ``fold`` turns the rows
past a watermark into what they add.

The job store keeps, per execution, the counts it folded and the seq they reach (the
watermark; ``models.store.progress.settle``). An execution holds a session lock in
the target named for its task while it erases (PostgreSQL advisory lock, MariaDB
``GET_LOCK``; SQLite's writer lock serialises by itself), so the next execution
waits for a dead one's session to end before it settles the counts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from worker.catalog.reflection import LEDGER_TABLE
from worker.dialects.base import Dialect, lock_key
from worker.exceptions import SubjectLocked

log = logging.getLogger("eraser.ledger")

_METADATA = sa.MetaData()

#: The ledger table, in the connection's default schema (PostgreSQL: the first of the
#: search path; MariaDB: the service's database; SQLite: main).
LEDGER = sa.Table(
    LEDGER_TABLE,
    _METADATA,
    sa.Column("task", sa.String(120), nullable=False),
    sa.Column("execution", sa.String(64), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("counts", sa.Text, nullable=False),
    sa.PrimaryKeyConstraint("task", "execution", "seq", name="eraser_ledger_pkey"),
)

#: The key of a server-side loop's call in a ledger row's counts.
CALL = "call"


@dataclass
class Ledger:
    """One execution's ledger: the task and execution it writes under, and the seq
    of its last row."""

    task: str
    execution: str
    #: Told once, before any batch, whether the target keeps the ledger (False: the
    #: table cannot be created, e.g. no privilege).
    on_ready: Callable[[bool], None] | None = None
    #: Raises when the execution no longer holds its task (checked once the session
    #: lock is held: an execution taken over must not start erasing).
    still_held: Callable[[], None] | None = None
    seq: int = 0
    active: bool = False
    _locked: tuple[int, str] | None = field(default=None, repr=False)

    def start(self, conn: Connection, dialect: Dialect, wait_seconds: float) -> None:
        """Before any batch: make sure the table exists, take the task's session lock
        (waiting at most ``wait_seconds`` for another execution's session to end)."""
        self.active = ensure_table(conn)
        self._lock(conn, dialect, wait_seconds)
        # Told only once the lock is held: an execution that ends without it (another
        # one's session still holds it) must not settle the others' counts, as one of
        # them may still be committing batches.
        if self.on_ready is not None:
            self.on_ready(self.active)
        if self.still_held is not None:
            self.still_held()

    def stop(self, conn: Connection, dialect: Dialect) -> None:
        """Release the session lock (a lost connection released it already)."""
        locked, self._locked = self._locked, None
        if locked is None or conn.invalidated or conn.closed:
            return
        try:
            with conn.begin():
                dialect.unlock(conn, *locked)
        except sa.exc.DBAPIError as exc:
            # A session lock left on a pooled connection would refuse every later
            # execution of the task: the connection is discarded, and the lock with it.
            log.debug("ledger lock not released: %s", type(exc).__name__)
            conn.invalidate()

    def _lock(self, conn: Connection, dialect: Dialect, wait_seconds: float) -> None:
        number, name = lock_key(["eraser-ledger", self.task])
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                with conn.begin():
                    got = dialect.try_lock(conn, number, name)
            except NotImplementedError:
                return  # SQLite: one writer at a time already
            if got:
                self._locked = (number, name)
                return
            if time.monotonic() >= deadline:
                raise SubjectLocked(wait_seconds)
            time.sleep(0.05)

    def write(self, conn: Connection, counts: Mapping[str, int]) -> None:
        """Insert this transaction's row (``counts``: what it removed); the seq moves
        on even if the commit then fails (the row may have committed)."""
        if not self.active:
            return
        self.seq += 1
        conn.execute(
            LEDGER.insert().values(
                task=self.task,
                execution=self.execution,
                seq=self.seq,
                counts=json.dumps(dict(counts), separators=(",", ":")),
            )
        )

    def loop_insert(self, keys: Sequence[str], quote: Callable[[str], str], prefix: str) -> str:
        """The statement a server-side loop runs before each batch's ``COMMIT``: its
        row holds the call's running tally (``{prefix}k``, one counter per key) at
        seq ``{prefix}lseq + {prefix}batches``. ``quote`` writes a text literal."""
        pairs = [f"{quote(CALL)}, {prefix}call"]
        pairs += [f"{quote(k)}, {prefix}k[{i + 1}]" for i, k in enumerate(keys)]
        return (
            f"INSERT INTO {LEDGER_TABLE} (task, execution, seq, counts) VALUES"
            f" ({quote(self.task)}, {quote(self.execution)}, {prefix}lseq + {prefix}batches,"
            f" json_build_object({', '.join(pairs)})::text);"
        )


@contextlib.contextmanager
def kept(
    ledger: Ledger | None, conn: Connection, dialect: Dialect, wait_seconds: float
) -> Iterator[None]:
    """An erasure's block with ``ledger`` started on ``conn`` (none: nothing)."""
    if ledger is None:
        yield
        return
    try:
        ledger.start(conn, dialect, wait_seconds)
        yield
    finally:
        ledger.stop(conn, dialect)


#: Engines whose ledger table was found usable, and when (``ensure_table`` looks
#: again after ``_KNOWN_SECONDS``: a table dropped meanwhile fails at most the
#: attempts of that long, which are retried).
_known: weakref.WeakKeyDictionary[Engine, float] = weakref.WeakKeyDictionary()
_KNOWN_SECONDS = 60.0


def ensure_table(conn: Connection) -> bool:
    """Create the ledger table if it is missing, and check that this role may write,
    read and delete its rows; False when not (the role may not create tables, the
    table belongs to a role that granted this one nothing, a read-only database).
    A usable table is remembered per engine for a minute: a task's execution then
    spends no round trip on it."""
    seen = _known.get(conn.engine)
    if seen is not None and time.monotonic() - seen < _KNOWN_SECONDS:
        return True
    if not _usable(conn):
        return False
    _known[conn.engine] = time.monotonic()
    return True


def _usable(conn: Connection) -> bool:
    try:
        with conn.begin():
            exists = sa.inspect(conn).has_table(LEDGER_TABLE)
        if not exists:
            try:
                with conn.begin():
                    LEDGER.create(conn, checkfirst=True)
            except sa.exc.DBAPIError:
                with conn.begin():  # another execution may have created it meanwhile
                    if not sa.inspect(conn).has_table(LEDGER_TABLE):
                        raise
        _probe(conn)
    except sa.exc.DBAPIError as exc:
        name = type(exc).__name__
        log.warning("no ledger in the target (%s): counts are kept as before", name)
        return False
    return True


def _probe(conn: Connection) -> None:
    """Insert and delete a row in a transaction that is rolled back: raises when the
    role may not."""
    probe = conn.begin()
    try:
        conn.execute(LEDGER.insert().values(task="", execution="", seq=0, counts="{}"))
        conn.execute(LEDGER.delete().where(LEDGER.c.task == "", LEDGER.c.execution == ""))
    finally:
        probe.rollback()


@dataclass(frozen=True)
class Entry:
    """One ledger row, read back."""

    execution: str
    seq: int
    counts: dict[str, Any]


def read(engine: Engine, task: str) -> list[Entry]:
    """The ledger rows of ``task`` (none when the table does not exist)."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(LEDGER_TABLE):
            return []
        rows = conn.execute(
            sa.select(LEDGER.c.execution, LEDGER.c.seq, LEDGER.c.counts)
            .where(LEDGER.c.task == task)
            .order_by(LEDGER.c.execution, LEDGER.c.seq)
        ).all()
    return [Entry(str(e), int(s), json.loads(c)) for e, s, c in rows]


def forget(engine: Engine, task: str, executions: Iterable[str] | None = None) -> None:
    """Delete the ledger rows of ``task`` (of ``executions`` only, when given): their
    counts are in the job store."""
    condition = LEDGER.c.task == task
    if executions is not None:
        names = sorted(set(executions))
        if not names:
            return
        condition = sa.and_(condition, LEDGER.c.execution.in_(names))
    with engine.connect() as conn, conn.begin():
        if sa.inspect(conn).has_table(LEDGER_TABLE):
            conn.execute(LEDGER.delete().where(condition))


def fold(entries: Sequence[Entry], watermark: int) -> tuple[int, dict[str, int]]:
    """What one execution's rows past ``watermark`` add to the counts its watermark
    holds, and the last seq: a client batch's row adds its counts; a loop call's rows
    add their last tally less the tally it had at the watermark."""
    added: dict[str, int] = {}
    last = watermark
    calls: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for entry in sorted(entries, key=lambda e: e.seq):
        last = max(last, entry.seq)
        call = entry.counts.get(CALL)
        if call is None:
            if entry.seq > watermark:
                _add(added, entry.counts, 1)
            continue
        before, latest = calls.get(str(call), ({}, {}))
        if entry.seq <= watermark:
            before = entry.counts
        calls[str(call)] = (before, entry.counts)
    for before, latest in calls.values():
        _add(added, latest, 1)
        _add(added, before, -1)
    return last, {k: v for k, v in added.items() if v}


def _add(into: dict[str, int], counts: Mapping[str, Any], sign: int) -> None:
    for key, rows in counts.items():
        if key != CALL:
            into[key] = into.get(key, 0) + sign * int(rows)
