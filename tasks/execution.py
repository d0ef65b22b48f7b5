"""What one execution of ``eraser.erase_service`` is given (its delivery) and what it
ends with (its outcome, for the Celery task to act on)."""

from __future__ import annotations

from dataclasses import dataclass

from models.messages import TaskResult


@dataclass(frozen=True)
class Delivery:
    """What the broker says about this execution's message."""

    celery_id: str | None = None
    #: The broker delivered this message before (its worker was lost).
    redelivered: bool = False
    worker: str | None = None
    #: The lease of this message's previous execution, which ended when the job store
    #: failed: taken back without counting a crash.
    abandoned_lease: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What an execution ended with, for the Celery task to act on."""

    result: TaskResult
    #: Send the task again after this many seconds (retry, next slice, busy).
    again_in: float | None = None
    #: This execution lost its lease to another one: drop the message quietly.
    superseded: bool = False
    #: The task reached a terminal state in this execution.
    finished: bool = False
    #: Dead letter to publish to the broker (its id), after the commit.
    dead_letter_id: int | None = None
    #: Finished, and the transaction that recorded it saw no other task of the job
    #: still open: this execution finalizes the job (the chord body does too; this
    #: covers a lost chord). Two tasks ending at once may each see the other open;
    #: then the chord body, or the reaper, finalizes.
    last: bool = False
