"""How an erasure runs (``ExecutionOptions``), what it reports as it goes
(``Progress``), and how a time slice ends (``SliceEnded``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from models.erasure import TableAction, TableOutcome

if TYPE_CHECKING:
    from worker.execution.ledger import Ledger

#: Who checks the references into a batch of parents as it goes (``fk_checks``).
#: ``database``: the database's own per-row foreign-key triggers. ``eraser``
#: (PostgreSQL): Eraser, under the batch's row locks (``reference_checks``); the role
#: must be a superuser or be granted ``SET ON PARAMETER session_replication_role``.
#: ``auto``: ``eraser`` where the role may have it, else ``database``.
FK_CHECKS = ("auto", "database", "eraser")

#: What becomes of a subject's own LIST partition (``worker.execution.partitions``):
#: ``truncate`` empties it and keeps it, ``drop`` detaches and drops it, ``rows``
#: erases its rows one batch at a time like any others.
PARTITION_MODES = ("truncate", "drop", "rows")


@dataclass(frozen=True)
class ExecutionOptions:
    #: Rows per transaction.
    batch_size: int = 2000
    #: How long one statement may wait for a row lock before the batch fails.
    lock_timeout_ms: int = 5000
    #: How long to wait for another erasure of the same subject to finish.
    subject_lock_wait_seconds: float = 600.0
    #: Passes of the walk before giving up on verification.
    max_passes: int = 3
    #: PostgreSQL: commit batches without waiting for the WAL flush, then make the
    #: whole walk durable with one synchronous commit before verifying. A server crash
    #: can undo the last batches, never a verified erasure (a re-run finds them).
    fast_commit: bool = True
    #: ``time.monotonic()`` value after which the erasure stops at the next batch
    #: boundary by raising ``SliceEnded`` (a task continues it in a new delivery).
    deadline: float | None = None
    #: Who checks references into removed rows: one of ``FK_CHECKS``.
    fk_checks: str = "auto"
    #: PostgreSQL: run the batches of the common walks inside the server, several to a
    #: round trip (``worker.execution.serverloop``); off, every statement is a round trip.
    server_batches: bool = True
    #: PostgreSQL: the batches write their full-page images to the WAL compressed
    #: (lz4), where the role may and the server does not already; about half the WAL
    #: (``Dialect.wal_compression``).
    compress_wal: bool = True
    #: A subject's own LIST partition is removed whole: one of ``PARTITION_MODES``.
    partitions: str = "truncate"
    #: A task's execution: every batch also writes its counts into the target's ledger
    #: (``worker.execution.ledger``), and the erasure holds the task's session lock.
    #: None (a plain ``erase()``): no ledger.
    ledger: Ledger | None = None

    def __post_init__(self) -> None:
        if self.fk_checks not in FK_CHECKS:
            raise ValueError(f"fk_checks must be one of {', '.join(FK_CHECKS)}")
        if self.partitions not in PARTITION_MODES:
            raise ValueError(f"partitions must be one of {', '.join(PARTITION_MODES)}")


@dataclass(frozen=True)
class Progress:
    """Reported after every committed batch."""

    table: str
    action: TableAction
    rows: int
    total_rows: int
    elapsed_seconds: float
    rows_by_table: dict[str, int]
    #: The longest batch transaction the server-side loop ran for this report (0 for
    #: a batch run from the client).
    server_batch_seconds: float = 0.0
    #: The seq of the last ledger row these counts include (None: no ledger).
    ledger_seq: int | None = None


ProgressCallback = Callable[[Progress], None]


class SliceEnded(Exception):
    """The erasure reached ``ExecutionOptions.deadline`` between two batches.

    Everything counted in ``tables`` is committed (and durable): running the same plan
    again continues from there, as after a crash, since predicates are re-evaluated.
    """

    def __init__(self, tables: list[TableOutcome]) -> None:
        super().__init__("time slice ended")
        self.tables = tables
