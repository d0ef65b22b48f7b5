"""Structured logs: with ``ERASER_LOG_FORMAT=json`` every log line of the worker, the
reaper and the API is one JSON object ``{"time", "level", "logger", "message"}``, plus
``task``, ``task_id``, ``job_id`` and ``service`` inside a task. Those come from the
task's arguments, which are opaque ids by design: never a subject value or a DSN."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from celery.signals import after_setup_logger, after_setup_task_logger


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update(_task_fields())
        if record.exc_info and record.exc_info[0] is not None:
            # The type only: exception messages can quote row data.
            doc["exception"] = record.exc_info[0].__name__
        return json.dumps(doc, ensure_ascii=False)


def _task_fields() -> dict[str, Any]:
    from celery import current_task  # noqa: PLC0415 - only inside a worker

    task = current_task
    if task is None or getattr(task, "request", None) is None or task.request.id is None:
        return {}
    fields: dict[str, Any] = {"task": task.name, "task_id": task.request.id}
    args = list(task.request.args or ())
    if task.name in ("eraser.erase_service", "eraser.dispatch_job", "eraser.announce_job"):
        if args:
            fields["job_id"] = args[0]
        if len(args) > 1 and task.name == "eraser.erase_service":
            fields["service"] = args[1]
    elif task.name == "eraser.finalize_job" and len(args) > 1:
        fields["job_id"] = args[1]
    return fields


def use_json(logger: logging.Logger | None = None) -> None:
    """Put the JSON formatter on every handler of ``logger`` (the root by default),
    adding a stderr handler when there is none."""
    target = logger or logging.getLogger()
    if not target.handlers:
        target.addHandler(logging.StreamHandler())
        target.setLevel(logging.INFO)
    for handler in target.handlers:
        handler.setFormatter(JsonFormatter())


def _json_wanted() -> bool:
    from models.settings import get_settings  # noqa: PLC0415

    return get_settings().log_format == "json"


@after_setup_logger.connect  # type: ignore[untyped-decorator]
def _worker_logger(logger: logging.Logger, **_kwargs: object) -> None:
    if _json_wanted():
        use_json(logger)


@after_setup_task_logger.connect  # type: ignore[untyped-decorator]
def _task_logger(logger: logging.Logger, **_kwargs: object) -> None:
    if _json_wanted():
        use_json(logger)
