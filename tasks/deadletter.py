"""Dead letters: tasks that failed for good, kept for operators to read and replay.

A dead letter is two things:

- a row in the job store (the source of truth: error, frames-only traceback,
  attempts, when and by whom it was replayed), written in the same transaction that
  marks the task failed (``models.store.dead_letters``);
- a fresh copy of the task's message on the ``eraser.dead_letter`` queue, which no
  worker consumes: no chord options, the original ids in the body
  (``dead_letter_id``, ``original_task_id``), for tools that watch the broker.

``eraser dead-letters replay ID`` (or ``eraser retry JOB``) resets the task and sends
it again in a new chord; the copy on the queue is removed then.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from kombu.entity import Exchange
from kombu.entity import Queue as KombuQueue

from tasks.queues import Queue
from worker.app import app

log = logging.getLogger("eraser.deadletter")

DEAD_LETTER_QUEUE = KombuQueue(
    Queue.DEAD_LETTER.value, Exchange(Queue.DEAD_LETTER.value), routing_key=Queue.DEAD_LETTER.value
)


def format_frames(exc: BaseException | None) -> str | None:
    """A traceback of frames only (file, line, function, source line) and the
    exception's type: the message may quote row data, so it is left out."""
    if exc is None:
        return None
    frames = traceback.format_list(traceback.extract_tb(exc.__traceback__))
    return "".join(frames) + type(exc).__name__


def publish_dead_letter(
    job_id: str, service: str, dead_letter_id: int, original_task_id: str | None
) -> None:
    """Put the dead letter's message on the dead-letter queue. Best effort: the row in
    the job store already holds everything an operator needs."""
    try:
        app.send_task(
            "eraser.erase_service",
            args=(job_id, service),
            kwargs={"dead_letter_id": dead_letter_id, "original_task_id": original_task_id},
            queue=DEAD_LETTER_QUEUE,
            declare=[DEAD_LETTER_QUEUE],
            ignore_result=True,
        )
    except Exception as exc:
        log.warning("dead letter %d not published to the broker: %s", dead_letter_id, exc)


def remove_published(dead_letter_ids: set[int], limit: int = 10_000) -> int:
    """Remove the messages of these dead letters from the dead-letter queue (after a
    replay); returns how many were removed. Other messages are put back."""
    if not dead_letter_ids:
        return 0
    removed = 0
    keep: list[Any] = []
    try:
        with app.connection_for_write() as conn:
            queue = DEAD_LETTER_QUEUE(conn.default_channel)
            queue.declare()
            for _ in range(limit):
                message = queue.get(no_ack=False, accept=["json"])
                if message is None:
                    break
                if _letter_id(message) in dead_letter_ids:
                    message.ack()
                    removed += 1
                else:
                    keep.append(message)
            for message in keep:
                message.requeue()
    except Exception as exc:
        log.warning("dead-letter queue not cleaned: %s", exc)
    return removed


def _letter_id(message: Any) -> int | None:
    try:
        body = message.decode()
        # Celery protocol 2: [args, kwargs, embed]
        kwargs = body[1] if isinstance(body, list | tuple) else body.get("kwargs", {})
        value = kwargs.get("dead_letter_id")
        return int(value) if value is not None else None
    except Exception:
        return None
