"""Why the job store refuses a request: each failure a caller can meet, one class."""

from __future__ import annotations


class SubmitError(Exception):
    """The request cannot become a job (unknown kind or service)."""


class IdempotencyConflict(SubmitError):
    """The idempotency key was used before for a different request."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"idempotency key already used for job {job_id} with a different request")
        self.job_id = job_id


class RetryRefused(SubmitError):
    """Nothing to retry, or the job is still running."""


class SubjectPurged(RetryRefused):
    """The job's subject value was purged (its retention period passed): the job
    cannot run again; submit a new erasure for the subject instead."""

    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"job {job_id} cannot run again: the subject's value was purged after its "
            "retention period (ERASER_SUBJECT_RETENTION_DAYS); submit a new erasure"
        )
        self.job_id = job_id
