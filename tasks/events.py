"""Completion events: when a job reaches a terminal state, tell the world.

``eraser.announce_job(job_id)`` (sent by ``finalize`` once per terminal transition)
builds the event from the job store and

- publishes it to the ``eraser.events`` exchange (a durable ``eraser.events`` queue is
  bound to it) when ``ERASER_EVENTS`` is on;
- POSTs it to ``ERASER_WEBHOOK_URL`` when set, signed with HMAC-SHA256 under
  ``ERASER_WEBHOOK_SECRET`` (header ``X-Eraser-Signature: sha256=<hex>`` over the raw
  body), retried with exponential backoff on network errors and 5xx answers.

The event carries ids, status and totals; the subject's value only when the registry
sets ``events_include_value`` for that subject kind, and only while the job store
still holds it: a job that succeeds or is cancelled loses it in the transaction that
ends it, so only the event built by that worker, right then, can carry it (an event
built later, e.g. for the webhook, has none). See docs/privacy.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Sequence
from typing import Any

import httpx
from celery import Task as CeleryTask
from kombu.entity import Exchange
from kombu.entity import Queue as KombuQueue

from models.registry import Registry
from models.store.database import JobStore
from models.store.finalizing import finished_job
from models.store.sealing import SubjectSeal, UnreadableSubject
from tasks.resources import resources
from worker.app import app

log = logging.getLogger("eraser.events")

# A direct exchange: on Redis a fanout exchange only reaches subscribers listening at
# that moment, while a direct one keeps the event on the bound queue until consumed.
EVENTS_EXCHANGE = Exchange("eraser.events", type="direct", durable=True)
EVENTS_QUEUE = KombuQueue("eraser.events", EVENTS_EXCHANGE, routing_key="eraser.events")
#: Webhook delivery attempts before giving up (backoff 2, 4, 8, ... s, at most 300 s).
WEBHOOK_ATTEMPTS = 8


def completion_event(store: JobStore, registry: Registry, job_id: str) -> dict[str, Any] | None:
    """The event for a finished job (None when the job does not exist)."""
    with store.transaction(durable=False) as session:
        found = finished_job(session, job_id)
        if found is None:
            return None
        job, tasks = found
        return event_of(job, tasks, registry, store.seal, job.subject_value)


def event_of(
    job: Any,
    tasks: Sequence[tuple[str, str, int, bool]],
    registry: Registry,
    seal: SubjectSeal,
    sealed_value: str | None,
) -> dict[str, Any]:
    """The completion event of ``job`` (anything with the job's columns as attributes:
    the mapped object or a row) and its tasks (service, status, rows, verified);
    ``sealed_value``: the subject's value as stored (None: purged)."""
    event: dict[str, Any] = {
        "event": "job.finished",
        "job_id": job.id,
        "subject_kind": job.subject_kind,
        "status": str(job.status),
        "dry_run": job.dry_run,
        "total_rows": job.total_rows,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "services": {
            service: {"status": status, "rows": rows, "verified": verified}
            for service, status, rows, verified in tasks
        },
    }
    kind = registry.subjects.get(job.subject_kind)
    if kind is not None and kind.events_include_value and sealed_value is not None:
        try:
            event["subject_value"] = seal.open(sealed_value)
        except UnreadableSubject:
            log.warning("job %s: the event goes without the subject's value", job.id)
    return event


def publish_event(event: dict[str, Any]) -> None:
    """Put a completion event on the ``eraser.events`` exchange."""
    with app.producer_or_acquire() as producer:
        producer.publish(
            event,
            exchange=EVENTS_EXCHANGE,
            routing_key="eraser.events",
            declare=[EVENTS_QUEUE],
            serializer="json",
            retry=True,
        )


def announce_here(job_id: str, event: dict[str, Any] | None = None) -> None:
    """In a worker: publish the completion event in this process when there is no
    webhook to call (no task hop for a publish); with a webhook, which may be slow
    and is retried, the ``announce_job`` task does it. ``event``: already built."""
    res = resources()
    if res.settings.webhook_url or not res.settings.events:
        if res.settings.webhook_url:
            announce_job.apply_async((job_id,), queue=res.settings.default_queue)
        return
    if event is None:
        event = completion_event(res.store, res.registry, job_id)
    if event is not None:
        publish_event(event)


def sign_body(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@app.task(name="eraser.announce_job", bind=True, max_retries=WEBHOOK_ATTEMPTS, ignore_result=True)
def announce_job(self: CeleryTask[Any, Any], job_id: str, published: bool = False) -> None:
    res = resources()
    settings = res.settings
    event = completion_event(res.store, res.registry, job_id)
    if event is None:
        return
    if settings.events and not published:
        publish_event(event)
        published = True
    if settings.webhook_url:
        body = json.dumps(event, sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "X-Eraser-Event": "job.finished"}
        if settings.webhook_secret is not None:
            headers["X-Eraser-Signature"] = sign_body(
                settings.webhook_secret.get_secret_value(), body
            )
        try:
            answer = httpx.post(settings.webhook_url, content=body, headers=headers, timeout=10)
            if answer.status_code >= 500:
                raise httpx.HTTPStatusError(
                    f"webhook answered {answer.status_code}",
                    request=answer.request,
                    response=answer,
                )
            if answer.status_code >= 400:
                log.warning("webhook refused the event of job %s: %d", job_id, answer.status_code)
        except httpx.HTTPError as exc:
            countdown = min(300, 2 ** (self.request.retries + 1))
            log.warning(
                "webhook for job %s failed (%s); again in %ds",
                job_id,
                type(exc).__name__,
                countdown,
            )
            raise self.retry(
                args=(job_id,), kwargs={"published": published}, countdown=countdown
            ) from None
