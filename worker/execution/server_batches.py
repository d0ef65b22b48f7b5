"""When and how an ordered walk's batches run inside the server (``serverloop``): the
loop built for a table, and its calls made one after another with progress, the
deadline and the batches it gives back to the client."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from models.erasure import TableAction
from worker.catalog.model import ForeignKey, TableName
from worker.execution.checked_batches import ReferenceChecker
from worker.execution.context import WalkContext
from worker.execution.reference_checks import Shortcut
from worker.execution.serverloop import (
    MIN_SERVER_VERSION,
    OVERFLOW,
    PREFIX,
    REFERENCED,
    LoopRun,
    LoopSpec,
    Node,
    Reference,
    ServerLoop,
    Sweep,
    driver_literals,
    loop_type,
)
from worker.execution.transactions import Transactions

#: How long one call of the server-side loop runs its batches before reporting back.
_LOOP_SECONDS = 0.2
#: Under a shorter ``statement_timeout`` the batches go from the client (a call of the
#: loop is one statement; its last batch may run past the call's time).
_LOOP_MIN_STATEMENT_TIMEOUT_MS = 5000
#: Actions the server-side loop carries out (it removes rows; anonymizing goes by client).
_LOOP_ACTIONS = (TableAction.DELETE, TableAction.UNLINK)

Slots = list[tuple[TableName, TableAction]]


class _NoLoop(Exception):
    """A reference the server-side loop does not carry: the walk goes by client."""


@dataclass(frozen=True)
class Loop:
    server: ServerLoop
    #: The (table, action) of each of the loop's counters.
    slots: Slots
    leaf: bool


class ServerBatches:
    def __init__(self, ctx: WalkContext, tx: Transactions, checks: ReferenceChecker) -> None:
        self.ctx = ctx
        self.tx = tx
        self.checks = checks
        #: Tables with rows removed or cleared by batches run inside the server.
        self.in_server: set[TableName] = set()
        #: Whether the loop can run here at all (known on first use), and how long one
        #: call of it may run.
        self._ok: bool | None = None
        self._seconds = _LOOP_SECONDS

    def loop(self, table: TableName, where: ColumnElement[bool], leaf: bool) -> Loop | None:
        """The server-side loop for an ordered walk of ``table``, or None when it goes
        the client's way (see ``serverloop`` for what the loop covers)."""
        plan = self.ctx.plan
        if not self._possible() or plan.actions[table] not in _LOOP_ACTIONS:
            return None
        rid = self.ctx.rid[table]
        info = plan.info(table)
        if rid.kind != "key" or len(rid.columns) != 1 or info.partitioned or info.rules:
            return None
        dialect = self.ctx.conn.dialect
        if loop_type(self.ctx.table(table).c[rid.columns[0]].type, dialect) is None:
            return None
        slots: Slots = []
        try:
            if leaf:
                root = Node(self.ctx.table(table))
            else:
                root = self._node(table, self.checks.shortcuts[table], slots)
            spec = LoopSpec(
                root=root,
                key=rid.columns[0],
                where=where,
                slot=_slot(slots, table, plan.actions[table]),
                slots=len(slots),
                checks_off=not leaf,
                lock_timeout_ms=self.ctx.opts.lock_timeout_ms,
                fast_commit=self.ctx.opts.fast_commit,
                compression=self.tx.compression.setting,
                budget=self.tx.budget,
            )
            ledger = self.ctx.opts.ledger
            server = ServerLoop(
                spec,
                dialect,
                driver_literals(self.ctx.conn),
                ledger if ledger is not None and ledger.active else None,
                [f"{t}:{a}" for t, a in slots],
            )
            return Loop(server, slots, leaf)
        except Exception:
            # (A value the driver cannot write as a literal, a type without a loop
            # variable, a construct the loop does not carry: the client's way does.)
            return None

    def _possible(self) -> bool:
        conn = self.ctx.conn
        if self._ok is None:
            self._ok = self._supported()
            if self._ok and not conn.in_transaction():
                # A call is one statement of many batches: under a statement timeout
                # it must stay well inside it, and a short one leaves the client's way.
                with conn.begin():
                    limit = conn.execute(
                        sa.text("SELECT setting::bigint FROM pg_settings WHERE name = :n"),
                        {"n": "statement_timeout"},
                    ).scalar_one()
                self._seconds = _LOOP_SECONDS
                if limit:
                    self._seconds = min(_LOOP_SECONDS, limit / 1000.0 / 10)
                    self._ok = limit >= _LOOP_MIN_STATEMENT_TIMEOUT_MS
        return self.ctx.opts.server_batches and self._ok and not conn.in_transaction()

    def _supported(self) -> bool:
        """The database, driver and server version run the loop, and no name in the
        catalog could be taken for one of the loop's variables (a table's name is also a
        whole-row reference)."""
        dialect = self.ctx.conn.dialect
        version = dialect.server_version_info or (0,)
        catalog = self.ctx.plan.catalog
        names = [
            *(c.name for info in catalog.tables.values() for c in info.table.columns),
            *(t.name for t in catalog.tables),
            *(t.schema for t in catalog.tables),
        ]
        return (
            self.ctx.dialect.server_loop
            and dialect.driver == "psycopg2"
            and tuple(version) >= MIN_SERVER_VERSION
            and not any(name.lower().startswith(PREFIX) for name in names)
        )

    def _node(self, table: TableName, shortcut: Shortcut, slots: Slots) -> Node:
        sweeps = []
        for fk in shortcut.sweep:
            ref = self._reference(table, fk)
            guard = self.ctx.preds.guard(fk.child, ref.child)
            sweeps.append(
                Sweep(
                    ref,
                    self._node(fk.child, self.checks.shortcuts[fk.child], slots),
                    _slot(slots, fk.child, self.ctx.plan.actions[fk.child]),
                    None if guard is None else sa.not_(guard),
                )
            )
        clears = tuple(
            (self._reference(table, fk), _slot(slots, fk.child, TableAction.NULLIFY))
            for fk in shortcut.clear
        )
        probes = tuple(self._reference(table, fk) for fk in shortcut.probe)
        target = self.ctx.table(table)
        return Node(target, tuple(shortcut.referenced), tuple(sweeps), clears, probes)

    def _reference(self, table: TableName, fk: ForeignKey) -> Reference:
        if len(fk.child_columns) != 1 or fk in self.checks.wide:
            raise _NoLoop()
        child = self.ctx.table(fk.child)
        for t, c in ((child, fk.child_columns[0]), (self.ctx.table(table), fk.parent_columns[0])):
            if loop_type(t.c[c].type, self.ctx.conn.dialect) is None:
                raise _NoLoop()
        return Reference(child, fk.child_columns[0], fk.parent_columns[0])

    def walk(self, table: TableName, loop: Loop) -> bool:
        """Remove the rows of an ordered walk with the server-side loop, a call at a
        time. False when it gave a batch back that the client's general way must take;
        the batches before it are committed and counted."""
        last: Any = None
        while True:
            n = self.tx.batch_size(table)
            run, error = loop.server.run(self.ctx.conn, n, last, self._call_seconds())
            self._keep(table, loop, run, error)
            if run.batches:
                last = run.last
            if run.gave_back == REFERENCED:
                return False
            if run.gave_back == OVERFLOW:
                if n > 1:
                    self.tx.shrink_batch(table, n, run.top, run.rows)
                    continue
                self._widen(table, run)
                return False
            if run.done:
                return True

    def _call_seconds(self) -> float:
        """How long the next call may run: a fraction of a second, and not past the
        deadline."""
        seconds = min(_LOOP_SECONDS, self._seconds)
        if self.ctx.opts.deadline is not None:
            seconds = max(0.0, min(seconds, self.ctx.opts.deadline - time.monotonic()))
        return seconds

    def _keep(self, table: TableName, loop: Loop, run: LoopRun, error: Exception | None) -> None:
        """Count what a call committed, report it, and raise the error it ended with."""
        self.tx.pending.clear()
        if loop.server.ledger is not None:
            loop.server.ledger.seq += run.batches
        for (t, action), count in zip(loop.slots, run.counts, strict=True):
            self.tx.record(t, action, count)
            if count:
                self.in_server.add(t)
        if not loop.leaf and run.counts[loop.server.spec.slot]:
            self.checks.checked.add(table)
        self.tx.committed(run.longest_seconds, deadline=error is None)
        if error is not None:
            raise error

    def _widen(self, table: TableName, run: LoopRun) -> None:
        """A single row swept too many along: its widest reference goes in batches of
        its own first."""
        shortcut = self.checks.shortcuts.get(table)
        if shortcut is not None and run.swept:
            widest = max(range(len(run.swept)), key=run.swept.__getitem__)
            self.checks.wide.add(shortcut.sweep[widest])


def _slot(slots: Slots, table: TableName, action: TableAction) -> int:
    if (table, action) not in slots:
        slots.append((table, action))
    return slots.index((table, action))
