"""The walk's short transactions: each one's counts kept only once it commits (and,
for a task, written into the target's ledger in the same transaction), progress
reported after it, the time slice ended past the deadline, and each transaction's row
budget (with the batch sizes made smaller for tables that swept too many rows)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection

from models.erasure import TableAction, TableOutcome
from worker.catalog.model import ForeignKey, TableName
from worker.dialects.base import WalCompression
from worker.execution.context import WalkContext
from worker.execution.options import Progress, ProgressCallback, SliceEnded
from worker.execution.report import outcomes
from worker.planning.model import REMOVING

#: With Eraser checking references, a batch takes the rows referencing it along in its
#: transaction: up to this many batches' worth of rows in all, else it is made smaller.
TXN_ROWS_FACTOR = 16


class Transactions:
    """Runs the walk's batch transactions and keeps what they committed."""

    def __init__(self, ctx: WalkContext, progress: ProgressCallback | None, started: float) -> None:
        self.ctx = ctx
        self.progress = progress
        self.started = started
        #: Rows per (table, action), committed.
        self.counts: dict[tuple[TableName, TableAction], int] = {}
        self.pending: dict[tuple[TableName, TableAction], int] = {}
        #: How the batches compress their full-page images (known once rows are found).
        self.compression = WalCompression()
        #: Rows written by the current transaction (of its own table, and in all), and
        #: by each swept reference in it.
        self.top = 0
        self.rows = 0
        self.swept: dict[ForeignKey, int] = {}
        #: Batch sizes made smaller for tables whose batches swept too many rows along.
        self._batch: dict[TableName, int] = {}

    @property
    def budget(self) -> int:
        """Rows one transaction may write in all."""
        return self.ctx.opts.batch_size * TXN_ROWS_FACTOR

    @contextmanager
    def transaction(self, checks_off: bool = False) -> Iterator[Connection]:
        """One short transaction; its counts (and progress) are kept only once it commits."""
        self.pending.clear()
        self.rows = 0
        self.swept.clear()
        conn = self.ctx.conn
        with conn.begin():
            self.ctx.dialect.begin_batch(
                conn,
                self.ctx.opts.lock_timeout_ms,
                self.ctx.opts.fast_commit,
                checks_off,
                self.compression.setting,
            )
            yield conn
            ledger = self.ctx.opts.ledger
            if ledger is not None and self.pending:
                ledger.write(conn, {f"{t}:{a}": n for (t, a), n in self.pending.items()})
        self.committed()

    def committed(self, server_seconds: float = 0.0, deadline: bool = True) -> None:
        """Keep the counts of what was just committed, report progress, and end the
        slice past the deadline."""
        for (table, action), rows in self.pending.items():
            key = (table, action)
            self.counts[key] = self.counts.get(key, 0) + rows
            if self.progress is not None:
                self.progress(self._progress(table, action, rows, server_seconds))
        removed = bool(self.pending)
        self.pending.clear()
        # A slice ends only after a batch that changed rows: ending after an empty one
        # could leave every later slice re-checking the same empty start of the walk.
        end = self.ctx.opts.deadline
        if removed and deadline and end is not None and time.monotonic() >= end:
            self.ctx.dialect.flush_commits(self.ctx.conn)
            raise SliceEnded(self.outcomes())

    def _progress(
        self, table: TableName, action: TableAction, rows: int, server_seconds: float
    ) -> Progress:
        return Progress(
            table=str(table),
            action=action,
            rows=rows,
            total_rows=sum(c for (_, a), c in self.counts.items() if a in REMOVING),
            elapsed_seconds=time.monotonic() - self.started,
            rows_by_table={f"{t}:{a}": c for (t, a), c in self.counts.items()},
            server_batch_seconds=server_seconds,
            ledger_seq=self.ledger_seq,
        )

    @property
    def ledger_seq(self) -> int | None:
        """The seq of the last ledger row written (None: no ledger kept)."""
        ledger = self.ctx.opts.ledger
        return ledger.seq if ledger is not None and ledger.active else None

    def record(self, table: TableName, action: TableAction, rows: int) -> None:
        """Count rows written by the current transaction (kept once it commits)."""
        if rows > 0:
            self.pending[(table, action)] = self.pending.get((table, action), 0) + rows

    def outcomes(self) -> list[TableOutcome]:
        return outcomes(self.ctx.plan, self.counts)

    def batch_size(self, table: TableName) -> int:
        return self._batch.get(table, self.ctx.opts.batch_size)

    def shrink_batch(self, table: TableName, n: int, top: int, total: int) -> None:
        """A batch of ``n`` rows of ``table`` (``top``) swept ``total`` rows along, past
        the transaction budget: aim the next at 3/4 of it (at least halving)."""
        self._batch[table] = max(1, min(n // 2, int(0.75 * top * self.budget / max(total, 1))))
