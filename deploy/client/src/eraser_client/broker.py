"""Submitting over a Celery broker only (no HTTP): the request travels as the keyword
arguments of task ``eraser.submit_request`` on queue ``eraser.requests``. The worker
validates them (a bad message is dead-lettered); the client sends only the fields
given, so the worker's defaults apply to the rest."""

from __future__ import annotations

from typing import Any, Protocol

REQUEST_TASK = "eraser.submit_request"
REQUEST_QUEUE = "eraser.requests"
#: The fields a request message may carry.
REQUEST_FIELDS = (
    "subject_kind",
    "subject_value",
    "services",
    "dry_run",
    "idempotency_key",
    "requested_by",
    "reason",
)


class SendsTasks(Protocol):
    """What is needed of a Celery app (no Celery import here: the caller has one)."""

    def send_task(self, name: str, **options: Any) -> Any: ...


def submit_via_celery(
    app: SendsTasks,
    subject_kind: str,
    subject_value: str,
    *,
    services: list[str] | None = None,
    dry_run: bool = False,
    idempotency_key: str | None = None,
    requested_by: str | None = None,
    reason: str | None = None,
) -> str:
    """Send an erasure request as a plain Celery message; returns the message's task id
    (the job id comes back as the task's result, if the caller keeps results).

    The arguments are hidden from Flower and worker logs (``argsrepr``/``kwargsrepr``)."""
    request: dict[str, Any] = {
        "subject_kind": subject_kind,
        "subject_value": subject_value,
        "services": services or [],
        "dry_run": dry_run,
    }
    optional = {"idempotency_key": idempotency_key, "requested_by": requested_by}
    request.update({k: v for k, v in {**optional, "reason": reason}.items() if v is not None})
    result = app.send_task(
        REQUEST_TASK,
        kwargs=request,
        queue=REQUEST_QUEUE,
        argsrepr="()",
        kwargsrepr="{...}",
    )
    return str(result.id)
