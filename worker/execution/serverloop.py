"""PostgreSQL: a table's batches run inside the server, many to a round trip.

A ``ServerLoop`` sends the batches of one walk as one ``DO`` block: a PL/pgSQL loop
that runs the same statements as the client would, each with a fresh snapshot, and
``COMMIT``s after every batch. A call stops after a fraction of a second; what each
batch committed is reported even when a call fails midway or its session is lost. It
covers a table with a one-column integer or text key whose references are all handled
in the batch (``reference_checks.Shortcut``), or a leaf; anything else, and any batch
the loop gives back, goes the client's way. Why (live writers' CPU waits) and how:
docs/design/engine-notes.md, "Batches run inside the server".
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg2.extensions
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement

from worker.database import driver_error
from worker.dialects.postgresql_arrays import addressed_by, row_address
from worker.dialects.postgresql_session import check_bound, hold
from worker.execution.ledger import Ledger

#: Why the loop gave a batch back to the client: a reference it may not clear (another
#: subject's row, or a probe that found one), or a transaction budget exceeded. The
#: batch is rolled back, those before it stay committed, and the call ends normally
#: with the code in its session (an error would have the server log the call's text).
REFERENCED = "ERAS1"
OVERFLOW = "ERAS2"
#: PostgreSQL 11 runs ``COMMIT`` inside a ``DO`` block.
MIN_SERVER_VERSION = (11,)
#: Session settings where the loop leaves its committed state and its longest batch.
_STATE = "eraser.loop"
#: How the notice of a batch about to commit starts.
_TOLD = "eraser: batch"
#: How long a lost call's last transaction may take to be rolled back by its dying
#: backend before its outcome is read.
_SETTLE_SECONDS = 5.0
_LONGEST = "eraser.loop_longest"
#: Session setting where a call leaves the batch it gave back: call, code, detail.
_GAVE = "eraser.loop_gave"
#: Session setting a call starts its keyset after ('=' and the key), set beforehand in
#: a statement of its own: a key may be the subject's value (a table keyed by it), and
#: the call's own text stays free of values.
_LAST = "eraser.loop_last"
#: What SQLAlchemy leaves for the driver in a statement's text: an escaped percent
#: sign, a named parameter, a list expanded when it is run.
_PLACEHOLDER = re.compile(r"%%|%\(([^)]+)\)s|__\[POSTCOMPILE_([^\]]+)\]")
#: How errors name a call of the loop.
_STATEMENT = "DO (server-side batches)"
#: Prefix of the loop's variables; a column named like one would be ambiguous.
PREFIX = "eraser_"


@dataclass(frozen=True)
class Reference:
    """A one-column reference into a node's removed rows."""

    child: sa.Table
    column: str
    parent_column: str


@dataclass(frozen=True)
class Node:
    """A table whose removed rows' references are handled in the batch: ``sweeps``
    remove the referencing rows (recursively), ``clears`` set them NULL (with the
    counter of nullified rows), ``probes`` must find none."""

    table: sa.Table
    referenced: tuple[str, ...] = ()
    sweeps: tuple[Sweep, ...] = ()
    clears: tuple[tuple[Reference, int], ...] = ()
    probes: tuple[Reference, ...] = ()


@dataclass(frozen=True)
class Sweep:
    ref: Reference
    node: Node
    #: Counter of the rows it removes.
    slot: int
    #: A removed row that belongs to another subject: give the batch back.
    foreign: ColumnElement[bool] | None = None


@dataclass(frozen=True)
class LoopSpec:
    root: Node
    #: The root table's one key column (keyset order).
    key: str
    where: ColumnElement[bool]
    #: Counter of the root table's removed rows, and how many counters there are.
    slot: int
    slots: int
    checks_off: bool
    lock_timeout_ms: int
    fast_commit: bool
    #: Rows one batch's transaction may write, swept rows included.
    budget: int
    #: ``wal_compression`` for each batch's transaction ('' leaves it as it is).
    compression: str = ""


@dataclass
class LoopRun:
    """What one call committed, and why it stopped."""

    batches: int = 0
    done: bool = False
    counts: list[int] = field(default_factory=list)
    last: Any = None
    #: The longest batch, from its first statement until its COMMIT returned.
    longest_seconds: float = 0.0
    #: ``REFERENCED`` or ``OVERFLOW`` when a batch was given back, else None.
    gave_back: str | None = None
    #: For ``OVERFLOW``: the root rows and all rows of the batch given back, and the
    #: rows swept through each of the root's sweeps.
    top: int = 0
    rows: int = 0
    swept: list[int] = field(default_factory=list)


def loop_type(type_: sa.types.TypeEngine[Any], dialect: Dialect) -> str | None:
    """The PL/pgSQL type of a variable holding values of a key or referenced column,
    or None when the loop does not carry that type (the client's way then)."""
    if isinstance(type_, sa.Integer) and not isinstance(type_, sa.Enum):
        return type_.compile(dialect=dialect)
    # Exactly these: a subtype may compare and sort otherwise than text (``citext``
    # ignores case), and a keyset compared one way and ordered another skips rows.
    if type(type_) in _TEXT_TYPES:
        return "text"
    return None


_TEXT_TYPES = (sa.String, sa.Text, sa.VARCHAR, sa.TEXT, sa.Unicode, sa.UnicodeText, sa.NVARCHAR)


def aggregated(
    stmt: sa.Delete | sa.Update,
    cols: Sequence[sa.Column[Any]],
    keys: Sequence[ColumnElement[Any]],
    foreign: ColumnElement[bool] | None,
) -> sa.Select[Any]:
    """``stmt`` with what the sweeps below it need, as one row: the count, an array of
    each of ``cols`` (one value per removed row), the greatest of ``keys`` (one column)
    and whether any removed row matched ``foreign``."""
    named = [c.label(f"c{i}") for i, c in enumerate(cols)]
    named += [k.label(f"k{i}") for i, k in enumerate(keys)]
    flag = [] if foreign is None else [foreign.label("foreign")]
    returned = [*named, *flag] or [sa.literal(1).label("x")]
    gone = stmt.returning(*returned).cte("gone")
    aggregates: list[ColumnElement[Any]] = [sa.func.count()]
    aggregates += [
        sa.func.array_agg(gone.c[f"c{i}"], type_=postgresql.ARRAY(c.type))
        for i, c in enumerate(cols)
    ]
    aggregates += [sa.func.max(gone.c[f"k{i}"]) for i in range(len(keys))]
    if flag:
        aggregates.append(sa.func.bool_or(gone.c.foreign))
    # (From the CTE even when no column of it is read: a count alone would drop it.)
    return sa.select(*aggregates).select_from(gone)


class ServerLoop:
    """The batches of one walk, run as ``DO`` blocks (see the module's docstring)."""

    def __init__(
        self,
        spec: LoopSpec,
        dialect: Dialect,
        render: Callable[[Any], str],
        ledger: Ledger | None = None,
        ledger_keys: Sequence[str] = (),
    ) -> None:
        """``render`` writes one value as a SQL literal, as the driver would interpolate
        it on the connection the loop runs on (``driver_literals``). With ``ledger``,
        each batch writes its call's tally (one counter per slot, ``ledger_keys``
        naming them) into the target's ledger before its ``COMMIT``."""
        self.spec = spec
        self.dialect = dialect
        self.render = render
        self.ledger = ledger
        self.ledger_keys = list(ledger_keys)
        root = spec.root.table
        key = root.c[spec.key]
        key_type = loop_type(key.type, dialect)
        if key_type is None:
            raise ValueError(f"no loop for a key of type {key.type}")
        self.key_type = key_type
        self._declared: list[str] = []
        into = ", ".join(self._node_vars(spec.root, 0, True, False))
        self._nodes = 1
        self._tops = len(spec.root.sweeps)
        last = sa.literal_column(f"{PREFIX}last", key.type)
        first = self._root_statement(spec.where)
        following = self._root_statement(sa.and_(spec.where, key > last))
        body = self._node_body(spec.root, 0, None)
        settings = [
            "set_config('client_min_messages', 'notice', true)",
            f"set_config('lock_timeout', '{int(spec.lock_timeout_ms)}ms', true)",
            f"set_config('synchronous_commit', '{'off' if spec.fast_commit else 'on'}', true)",
        ]
        if spec.checks_off:
            settings.append("set_config('session_replication_role', 'replica', true)")
        if spec.compression:
            if not spec.compression.isalnum():
                raise ValueError("unexpected wal_compression value")
            settings.append(f"set_config('wal_compression', '{spec.compression}', true)")
        p = PREFIX
        tallies = f"{p}s := array_fill(0::bigint, ARRAY[{self._tops}]);" if self._tops else ""
        self._loop = "\n".join(
            [
                "LOOP",
                f"{p}t0 := clock_timestamp();",
                f"PERFORM {', '.join(settings)};",
                tallies,
                f"IF {p}last IS NULL THEN",
                f"{first} INTO {into};",
                "ELSE",
                f"{following} INTO {into};",
                "END IF;",
                f"{p}rows := {p}g0_n;",
                f"IF {p}g0_n > 0 THEN",
                body,
                "END IF;",
                f"{p}k[{spec.slot + 1}] := {p}k[{spec.slot + 1}] + {p}g0_n;",
                f"{p}batches := {p}batches + 1;",
                f"IF {p}g0_n > 0 THEN {p}last := {p}g0_last; END IF;",
                f"{p}done := {p}g0_n < {p}n;",
                f"PERFORM set_config('{_STATE}', {p}call || ' ' || {p}batches || ' '"
                f" || {p}done::int || ' ' || array_to_string({p}k, ',') || ' '"
                f" || coalesce('=' || {p}last::text, ''), false);",
                # The same tally, told to the client as it goes, with the transaction
                # that commits it: if the session dies mid-call, its setting dies with
                # it, but the notices already arrived (``_read_notices``). Counts only,
                # no key: a server that logs notices logs no row value.
                f"RAISE NOTICE '{_TOLD} % % % %', {p}call,"
                " coalesce(txid_current_if_assigned()::text, '-'),"
                f" {p}batches, array_to_string({p}k, ',');",
                *self._ledger_lines(),
                "COMMIT;",
                f"{p}longest := greatest({p}longest, clock_timestamp() - {p}t0);",
                f"PERFORM set_config('{_LONGEST}', {p}call || ' '"
                f" || extract(epoch FROM {p}longest)::text, false);",
                "COMMIT;",
                f"EXIT WHEN {p}done OR clock_timestamp() >= {p}until;",
                "END LOOP;",
            ]
        )

    # --- the ledger (worker.execution.ledger) ---------------------------------------------

    def _ledger_lines(self) -> list[str]:
        """The batch's ledger row, in its transaction (none without a ledger)."""
        if self.ledger is None:
            return []
        return [self.ledger.loop_insert(self.ledger_keys, self.render, PREFIX)]

    def _ledger_declared(self) -> list[str]:
        """The seq the call's ledger rows count on from."""
        if self.ledger is None:
            return []
        return [f"{PREFIX}lseq integer := {int(self.ledger.seq)};"]

    # --- building -----------------------------------------------------------------------

    def _sql(self, stmt: sa.ClauseElement) -> str:
        """``stmt`` as text with its values written in as SQL literals: converted by
        their types' bind processors, then quoted by the driver on the loop's own
        connection, exactly as the client's statements would have them interpolated
        (``bytea``, ``standard_conforming_strings = off`` and the like included)."""
        compiled = stmt.compile(dialect=self.dialect)
        if not isinstance(compiled, SQLCompiler):
            raise ValueError(f"not a SQL statement: {type(stmt).__name__}")
        params: Mapping[str, Any] = compiled.construct_params()
        binds = {compiled.escaped_bind_names.get(k, k): b for k, b in compiled.binds.items()}

        def literal(name: str, value: Any) -> str:
            bind = binds.get(name)
            if bind is None:
                raise ValueError("a parameter without a type")
            processor = bind.type.dialect_impl(self.dialect).bind_processor(self.dialect)
            if processor is not None and value is not None:
                value = processor(value)
            return self.render(value)

        def substitute(m: re.Match[str]) -> str:
            if m.group(0) == "%%":
                return "%"
            if m.group(1) is not None:
                return literal(m.group(1), params[m.group(1)])
            name = m.group(2)
            values = params[name]
            return ", ".join(literal(name, v) for v in values) if values else "NULL"

        return _PLACEHOLDER.sub(substitute, compiled.string)

    def _declare(self, name: str, type_: str) -> str:
        self._declared.append(f"{PREFIX}{name} {type_};")
        return f"{PREFIX}{name}"

    def _node_vars(self, node: Node, index: int, with_last: bool, flag: bool) -> list[str]:
        targets = [self._declare(f"g{index}_n", "bigint")]
        for i, name in enumerate(node.referenced):
            type_ = loop_type(node.table.c[name].type, self.dialect)
            if type_ is None:
                raise ValueError(f"no loop for a column of type {node.table.c[name].type}")
            targets.append(self._declare(f"g{index}_c{i}", f"{type_}[]"))
        if with_last:
            targets.append(self._declare(f"g{index}_last", self.key_type))
        if flag:
            targets.append(self._declare(f"g{index}_f", "boolean"))
        return targets

    def _root_statement(self, where: ColumnElement[bool]) -> str:
        root = self.spec.root.table
        key = root.c[self.spec.key]
        chosen = (
            sa.select(row_address())
            .select_from(root)
            .where(where)
            .order_by(key)
            .limit(sa.literal_column(f"{PREFIX}n", sa.Integer))
        )
        stmt = sa.delete(root).where(addressed_by(chosen))
        cols = [root.c[c] for c in self.spec.root.referenced]
        return self._sql(aggregated(stmt, cols, [key], None))

    def _node_body(self, node: Node, index: int, top: int | None) -> str:
        p = PREFIX
        lines: list[str] = []

        def values(ref: Reference) -> ColumnElement[Any]:
            i = node.referenced.index(ref.parent_column)
            return sa.literal_column(f"{p}g{index}_c{i}")

        for t, sweep in enumerate(node.sweeps):
            j = self._nodes
            self._nodes += 1
            tally = t if top is None else top
            child = sweep.ref.child
            targets = self._node_vars(sweep.node, j, False, sweep.foreign is not None)
            chosen = (
                sa.select(row_address())
                .select_from(child)
                .where(child.c[sweep.ref.column] == sa.any_(values(sweep.ref)))
                .limit(sa.literal_column(f"{p}room + 1", sa.Integer))
            )
            stmt = sa.delete(child).where(addressed_by(chosen))
            cols = [child.c[c] for c in sweep.node.referenced]
            lines.append(f"{p}room := {p}budget - {p}rows;")
            lines.append(f"{self._sql(aggregated(stmt, cols, [], sweep.foreign))} INTO")
            lines.append(f"{', '.join(targets)};")
            if sweep.foreign is not None:
                lines.append(f"IF {p}g{j}_f THEN {self._give_back(REFERENCED)} END IF;")
            lines.append(f"{p}rows := {p}rows + {p}g{j}_n;")
            lines.append(f"{p}s[{tally + 1}] := {p}s[{tally + 1}] + {p}g{j}_n;")
            lines.append(f"IF {p}g{j}_n > {p}room THEN {self._give_back(OVERFLOW)} END IF;")
            lines.append(f"{p}k[{sweep.slot + 1}] := {p}k[{sweep.slot + 1}] + {p}g{j}_n;")
            inner = self._node_body(sweep.node, j, tally)
            if inner:
                lines += [f"IF {p}g{j}_n > 0 THEN", inner, "END IF;"]
        for ref, slot in node.clears:
            child = ref.child
            nulled = (
                sa.update(child)
                .where(child.c[ref.column] == sa.any_(values(ref)))
                .values({ref.column: None})
            )
            lines.append(f"{self._sql(nulled)};")
            lines.append(f"GET DIAGNOSTICS {p}x = ROW_COUNT;")
            lines.append(f"{p}k[{slot + 1}] := {p}k[{slot + 1}] + {p}x;")
        for ref in node.probes:
            child = ref.child
            found: sa.Select[Any] = (
                sa.select(sa.literal_column("1"))
                .select_from(child)
                .where(child.c[ref.column] == sa.any_(values(ref)))
                .limit(1)
            )
            sql = self._sql(found)
            if not sql.startswith("SELECT "):
                raise ValueError("unexpected probe statement")
            lines.append(f"PERFORM {sql[len('SELECT ') :]};")
            lines.append(f"IF FOUND THEN {self._give_back(REFERENCED)} END IF;")
        return "\n".join(lines)

    def _give_back(self, code: str) -> str:
        """Roll the batch back, leave why in the session and end the call (no error:
        a failed statement's text goes to the server's log)."""
        p = PREFIX
        detail = "''"
        if code == OVERFLOW:
            tallies = f"array_to_string({p}s, ',')" if self._tops else "''"
            detail = f"{p}g0_n || ' ' || {p}rows || ' ' || {tallies}"
        return (
            f"ROLLBACK; PERFORM set_config('{_GAVE}', {p}call || ' {code} ' || {detail}, false);"
            " EXIT;"
        )

    def block(self, call: str, n: int, last: Any, seconds: float) -> str:
        """The ``DO`` statement of one call; it starts after ``last`` (None: from the
        start), which ``run`` puts in the session first."""
        p = PREFIX
        start = "NULL"
        if last is not None:
            start = f"CAST(substr(current_setting('{_LAST}'), 2) AS {self.key_type})"
        declare = [
            f"{p}call text := '{call}';",
            f"{p}n integer := {int(n)};",
            f"{p}budget bigint := {int(self.spec.budget)};",
            f"{p}until timestamptz := clock_timestamp() + interval '{float(seconds):.6f} s';",
            f"{p}last {self.key_type} := {start};",
            f"{p}batches integer := 0;",
            f"{p}done boolean := false;",
            f"{p}rows bigint := 0;",
            f"{p}room bigint := 0;",
            f"{p}x bigint := 0;",
            f"{p}t0 timestamptz;",
            f"{p}longest interval := interval '0';",
            f"{p}k bigint[] := array_fill(0::bigint, ARRAY[{int(self.spec.slots)}]);",
            f"{p}s bigint[] := '{{}}';",
            *self._declared,
            *self._ledger_declared(),
        ]
        body = "\n".join(["DECLARE", *declare, "BEGIN", self._loop, "END"])
        tag = f"${PREFIX}{secrets.token_hex(8)}$"
        while tag in body:  # a value quoting the tag would end the block early
            tag = f"${PREFIX}{secrets.token_hex(8)}$"
        return f"DO {tag}\n{body}\n{tag}"

    # --- running ------------------------------------------------------------------------

    def run(
        self, conn: Connection, n: int, last: Any, seconds: float
    ) -> tuple[LoopRun, sa.exc.StatementError | None]:
        """Run batches of ``n`` rows after ``last`` (None: from the start) for about
        ``seconds`` (at least one batch), on ``conn`` between transactions. Returns
        what was committed and the database error that stopped the call, if any (a
        batch given back is not an error: see ``LoopRun.gave_back``)."""
        if conn.in_transaction():
            raise RuntimeError("the server-side loop runs between transactions")
        call = secrets.token_hex(6)
        sql = self.block(call, n, last, seconds)
        dbapi = conn.connection.dbapi_connection
        if dbapi is None:
            raise RuntimeError("no database connection")
        run = LoopRun(counts=[0] * self.spec.slots)
        error: sa.exc.StatementError | None = None
        was = dbapi.autocommit
        cursor = dbapi.cursor()
        check_bound(conn.info, sql)
        hold(conn, (_STATE, _LONGEST, _GAVE, _LAST))
        try:
            dbapi.autocommit = True
            try:
                if last is not None:
                    # (A statement of its own, which cannot fail on the value it holds.)
                    cursor.execute("SELECT set_config(%s, %s, false)", (_LAST, f"={last}"))
                cursor.execute(sql)
            except conn.dialect.loaded_dbapi.Error as exc:
                error = driver_error(conn, exc, cursor, _STATEMENT)
                if error.connection_invalidated:
                    self._read_notices(run, call, list(dbapi.notices), conn.engine)
                    return run, error
            try:
                cursor.execute(
                    f"SELECT current_setting('{_STATE}', true),"
                    f" current_setting('{_LONGEST}', true), current_setting('{_GAVE}', true)"
                )
                row = cursor.fetchone()
            except conn.dialect.loaded_dbapi.Error as exc:
                raise driver_error(conn, exc, cursor, _STATEMENT) from exc
        finally:
            cursor.close()
            if not conn.invalidated:
                dbapi.autocommit = was
        state, longest, gave = row if row else ("", "", "")
        self._read_state(run, call, state or "", longest or "")
        if error is None:
            self._read_gave_back(run, call, gave or "")
        return run, error

    def _read_gave_back(self, run: LoopRun, call: str, gave: str) -> None:
        """The batch this call gave back, if any: ``call code [top rows swept]``."""
        parts = gave.split(" ")
        if len(parts) < 2 or parts[0] != call or parts[1] not in (REFERENCED, OVERFLOW):
            return
        run.gave_back = parts[1]
        if run.gave_back == OVERFLOW:
            run.top, run.rows = int(parts[2]), int(parts[3])
            run.swept = [int(x) for x in parts[4].split(",") if x] if len(parts) > 4 else []

    def _read_notices(
        self, run: LoopRun, call: str, notices: Sequence[str], engine: sa.Engine
    ) -> None:
        """What the batches of a call whose session was lost had committed. Each batch
        told its tally just before its ``COMMIT``: every batch before the last one told
        committed (the next one began after it), and the last one did if its
        transaction did, which a new session asks the server."""
        prefix = f"{_TOLD} {call} "
        told: list[tuple[str, int, list[int]]] = []
        for notice in notices:
            _, _, message = notice.partition(":  ")
            if message.startswith(prefix):
                xid, batches, counts = message.removeprefix(prefix).strip().split(" ")
                told.append((xid, int(batches), [int(x) for x in counts.split(",")]))
        if told and not _committed(engine, told[-1][0]):
            told.pop()
        if told:
            _, run.batches, run.counts = told[-1]

    def _read_state(self, run: LoopRun, call: str, state: str, longest: str) -> None:
        parts = state.split(" ", 4)
        if len(parts) == 5 and parts[0] == call:
            run.batches = int(parts[1])
            run.done = parts[2] == "1"
            run.counts = [int(x) for x in parts[3].split(",")] if parts[3] else run.counts
            key = self.spec.root.table.c[self.spec.key]
            if parts[4].startswith("="):
                text = parts[4][1:]
                run.last = int(text) if isinstance(key.type, sa.Integer) else text
        seconds = longest.split(" ")
        if len(seconds) == 2 and seconds[0] == call:
            run.longest_seconds = float(seconds[1])


def _committed(engine: sa.Engine, xid: str) -> bool:
    """Whether transaction ``xid`` ("-": one that wrote nothing) committed, asked on a
    new session; False when that cannot be known (the server is gone too)."""
    if xid == "-":
        return True
    deadline = time.monotonic() + _SETTLE_SECONDS
    try:
        with engine.connect() as conn:
            while True:
                status = conn.execute(sa.text("SELECT txid_status(:x)"), {"x": int(xid)})
                found = status.scalar_one()
                conn.rollback()
                if found != "in progress" or time.monotonic() > deadline:
                    return bool(found == "committed")
                time.sleep(0.05)
    except sa.exc.DBAPIError:
        return False


def driver_literals(conn: Connection) -> Callable[[Any], str]:
    """How the driver (psycopg2) writes a value into a statement on ``conn``'s own
    connection: its quoting follows that connection's settings."""
    dbapi: Any = conn.connection.dbapi_connection
    codec = psycopg2.extensions.encodings.get(dbapi.encoding, "utf-8")

    def render(value: Any) -> str:
        cursor = dbapi.cursor()
        try:
            return str(cursor.mogrify("%s", (value,)).decode(codec))
        finally:
            cursor.close()

    return render
