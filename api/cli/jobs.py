"""``eraser db|worker|submit|status|jobs``: the job store and the Celery chord.

The commands read the registry from ``--config`` (``ERASER_CONFIG``) and the job store
from ``ERASER_DATABASE_URL``; the work is done by ``api.jobs``, imported when a
command runs (with the job store, pydantic and Celery: ``eraser --help`` needs none).
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import typer

from api.cli.errors import EXIT_OK
from api.cli.help import Command, Group
from api.cli.options import Config, Json, Timeout, Wait

PANEL = "Jobs (every service of the registry, through the queue)"


class JobState(StrEnum):
    """``models.store.tables.JobStatus``'s values (kept here: the job store loads slowly)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIALLY_FAILED = "partially_failed"
    FAILED = "failed"
    CANCELLED = "cancelled"


db_app = typer.Typer(help="Job store maintenance.", no_args_is_help=True, cls=Group)


@db_app.command("upgrade", cls=Command)
def db_upgrade() -> int:
    """Apply the job store's migrations (idempotent) and print its revision."""
    from api.jobs import db_upgrade  # noqa: PLC0415 - start-up time

    return db_upgrade()


def worker(ctx: typer.Context, config: Config = None) -> int:
    """Run a Celery worker for Eraser's queues.

    Arguments after the options go to `celery worker` (-c 4, --loglevel INFO, -Q ...);
    without -Q it consumes the default queue and every service's own queue. Needs a
    shared broker (ERASER_BROKER_URL).
    """
    from api.jobs import run_worker  # noqa: PLC0415 - start-up time

    return run_worker(config, list(ctx.args))


def submit(
    subject_kind: Annotated[
        str,
        typer.Option(
            "--subject-kind",
            metavar="KIND",
            help="The kind of subject, as the registry names it (tenant, user, ...).",
            show_default=False,
        ),
    ],
    subject: Annotated[
        str,
        typer.Option("--subject", metavar="VALUE", help="The subject's value.", show_default=False),
    ],
    config: Config = None,
    service: Annotated[
        list[str] | None,
        typer.Option(
            "--service",
            metavar="NAME",
            help="Only this service (repeatable). Default: every service of the kind.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count in every service; delete nothing.")
    ] = False,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            metavar="KEY",
            help="A repeated key returns the first job instead of a new one.",
            show_default=False,
        ),
    ] = None,
    reason: Annotated[
        str | None,
        typer.Option(
            "--reason", metavar="TEXT", help="Why, kept with the job.", show_default=False
        ),
    ] = None,
    requested_by: Annotated[
        str, typer.Option("--requested-by", metavar="WHO", help="Who asked, kept with the job.")
    ] = "cli",
    wait: Wait = False,
    timeout: Timeout = 600.0,
    json_out: Json = False,
) -> int:
    """Submit an erasure job: one task per service, through the queue.

    Exit status with --wait: 0 succeeded, 1 ended otherwise, 3 still running at
    --timeout. Embedded (no ERASER_BROKER_URL), it always waits: the worker lives in
    this process.
    """
    from api import jobs  # noqa: PLC0415 - start-up time
    from models.messages import ErasureRequest  # noqa: PLC0415

    request = ErasureRequest(
        subject_kind=subject_kind,
        subject_value=subject,
        services=service or [],
        dry_run=dry_run,
        idempotency_key=idempotency_key,
        requested_by=requested_by,
        reason=reason,
    )
    return jobs.submit(config, request, wait=wait, timeout=timeout, as_json=json_out)


def status(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="The job's id.")],
    config: Config = None,
    json_out: Json = False,
) -> int:
    """Show one job and its tasks (status, attempts, rows, errors)."""
    from api.jobs import show_status  # noqa: PLC0415 - start-up time

    return show_status(config, job_id, json_out)


def list_jobs(
    config: Config = None,
    state: Annotated[
        JobState | None,
        typer.Option("--status", help="Only jobs in this status.", show_default=False),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", metavar="N", min=1, help="How many, newest first.")
    ] = 20,
    json_out: Json = False,
) -> int:
    """List recent jobs, newest first."""
    from api.cli import display  # noqa: PLC0415 - start-up time
    from api.jobs import recent_jobs  # noqa: PLC0415

    views: list[dict[str, Any]] = recent_jobs(config, None if state is None else state.value, limit)
    if json_out:
        typer.echo(json.dumps(views, indent=2))
        return EXIT_OK
    display.out().print(display.jobs_table(views))
    return EXIT_OK


def services(config: Config = None, json_out: Json = False) -> int:
    """List the registered services: each one's kind (sql, redis, s3, http), the
    subject kinds it holds and its queue. Never a DSN or a secret: only the names of
    the environment variables a service's address is read from."""
    from api.cli import display  # noqa: PLC0415 - start-up time
    from api.jobs import registry_of, settings_for  # noqa: PLC0415

    registry = registry_of(settings_for(config))
    views = [
        {
            "name": name,
            "kind": service.kind,
            "subjects": registry.kinds_for(name),
            "queue": service.queue,
            "address_env": getattr(service, "url_env", None),
        }
        for name, service in sorted(registry.services.items())
    ]
    if json_out:
        typer.echo(json.dumps(views, indent=2))
        return EXIT_OK
    display.out().print(display.services_table(views))
    return EXIT_OK


def register(app: typer.Typer) -> None:
    """Add the job commands to the root app."""
    app.command("submit", cls=Command, rich_help_panel=PANEL)(submit)
    app.command("status", cls=Command, rich_help_panel=PANEL)(status)
    app.command("jobs", cls=Command, rich_help_panel=PANEL)(list_jobs)
    app.command("services", cls=Command, rich_help_panel=PANEL)(services)
    app.command(
        "worker",
        cls=Command,
        rich_help_panel=PANEL,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(worker)
    app.add_typer(db_app, name="db", rich_help_panel=PANEL)
