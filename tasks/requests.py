"""Plain-Celery submission, for services that have a broker connection and nothing else.

Send a message to the ``eraser.requests`` queue with task name
``eraser.submit_request`` and the request as keyword arguments (the fields of
``ErasureRequest``: ``subject_kind``, ``subject_value``, ``services``, ``dry_run``,
``idempotency_key``, ``requested_by``, ``reason``); ``eraser_client.submit_via_celery``
does it and hides the arguments from Flower (``kwargsrepr``). The task validates the
body with pydantic and submits the job as ``eraser submit`` does. A bad message never
crashes a worker: it is dead-lettered (to ``eraser.dead_letter``, with the reason and
the names of the faulty fields, never their values) and the task returns. A job store
that cannot take the job right now (a lost connection, a restart, a failover) loses
nothing: the message goes back to its queue, untouched, after a short pause, and is
submitted when the store answers again.

**The one right way to send it** hides the arguments: ``send_task("eraser.submit_request",
kwargs={...}, queue="eraser.requests", argsrepr="()", kwargsrepr="{...}")``, which
``eraser_client.submit_via_celery`` (the ``eraser-client`` distribution) does. Celery
otherwise puts a ``repr`` of the keyword arguments in the message's ``kwargsrepr``
header, which Flower, ``celery inspect`` and worker logs show. A request whose
``kwargsrepr`` shows the subject's value (or that has none, as protocol 1 messages)
is refused: dead-lettered with the reason only, never its arguments. The task also
sends no task events (``send_events=False``), so Flower's event stream never carries
its arguments, masked or not.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from celery import Task as CeleryTask
from celery.exceptions import Reject
from kombu.entity import Exchange
from kombu.entity import Queue as KombuQueue
from pydantic import ValidationError

from models.messages import ErasureRequest
from tasks.deadletter import DEAD_LETTER_QUEUE
from tasks.queues import Queue
from tasks.resources import resources
from tasks.submit import SubmitError, submit_and_dispatch
from worker.app import app
from worker.faults import classify

log = logging.getLogger("eraser.requests")

#: How long a worker waits before a request the job store could not take goes back to
#: its queue (jittered), so a store that is down is not asked in a tight loop.
REQUEUE_PAUSE_SECONDS = 2.0

REQUESTS_QUEUE = KombuQueue(
    Queue.REQUESTS.value, Exchange(Queue.REQUESTS.value), routing_key=Queue.REQUESTS.value
)


#: Why an unmasked request is refused (the reason a dead letter and a log line carry).
UNMASKED = (
    "refused: the request's arguments are not masked, so the subject's value is visible "
    "to Flower and worker logs; send it with kwargsrepr (e.g. kwargsrepr='{...}'), as "
    "eraser_client.submit_via_celery does, and submit it again"
)


def shows_value(kwargsrepr: str | None, fields: dict[str, Any]) -> bool:
    """Whether a message's ``kwargsrepr`` header (what monitors show instead of the
    arguments) shows the subject's value; a message without one shows its arguments."""
    if kwargsrepr is None:
        return True
    value = fields.get("subject_value")
    if value is None or value == "":
        return False
    text = str(value)
    quoted = repr(text)[1:-1]  # how saferepr writes a string, escapes included
    prefix = text[:16]  # saferepr may cut a long value short
    return any(part in kwargsrepr for part in (text, quoted, prefix))


@app.task(bind=True, name="eraser.submit_request", send_events=False)
def submit_request(self: CeleryTask[Any, Any], **fields: Any) -> dict[str, Any]:
    """Submit an erasure sent as a plain Celery message; returns ``{"job_id", "created"}``
    or ``{"rejected": reason}``."""
    if shows_value(getattr(self.request, "kwargsrepr", None), fields):
        return _reject(UNMASKED)
    res = resources()
    try:
        request = ErasureRequest.model_validate(fields)
        job, created = submit_and_dispatch(
            res.store,
            res.registry,
            request,
            res.settings.job_timeout_seconds,
            res.settings.default_queue,
        )
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        ]
        return _reject("invalid request: " + "; ".join(problems))
    except SubmitError as exc:
        return _reject(str(exc))
    except Exception as exc:
        fault = classify(exc)
        if not fault.retryable:
            return _reject(f"the job store refused the request: {fault.description}")
        # Not self.retry(): that sends a new message built from the arguments, without
        # the sender's kwargsrepr, and Flower would show the subject. The original
        # message goes back as it came.
        log.warning("request not submitted now (%s); back to the queue", fault.description)
        time.sleep(REQUEUE_PAUSE_SECONDS * random.uniform(0.5, 1.5))  # noqa: S311
        raise Reject(reason=fault.code, requeue=True) from None
    log.info("request submitted as job %s (created %s)", job.id, created)
    return {"job_id": job.id, "created": created}


def _reject(reason: str) -> dict[str, Any]:
    log.warning("request rejected: %s", reason)
    try:
        with app.producer_or_acquire() as producer:
            producer.publish(
                {"task": "eraser.submit_request", "reason": reason},
                exchange=DEAD_LETTER_QUEUE.exchange,
                routing_key=DEAD_LETTER_QUEUE.routing_key,
                declare=[DEAD_LETTER_QUEUE],
                serializer="json",
                headers={"x-eraser-rejected": "eraser.submit_request"},
            )
    except Exception as exc:  # the log line above still says why
        log.warning("rejected request not dead-lettered: %s", type(exc).__name__)
    return {"rejected": reason}
