"""``eraser retry|dead-letters|beat``: what operators run when something failed. The
work is done by ``api.ops``, imported when a command runs."""

from __future__ import annotations

from typing import Annotated

import typer

from api.cli.help import Command, Group
from api.cli.options import Actor, Config, Json, Timeout, Wait

PANEL = "Operations"

letters_app = typer.Typer(help="Inspect and replay dead letters.", no_args_is_help=True, cls=Group)


def retry(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="The job to retry.")],
    config: Config = None,
    service: Annotated[
        list[str] | None,
        typer.Option(
            "--service",
            metavar="NAME",
            help="Only this failed service (repeatable). Default: every failed one.",
            show_default=False,
        ),
    ] = None,
    actor: Actor = "cli",
    wait: Wait = False,
    timeout: Timeout = 600.0,
    json_out: Json = False,
) -> int:
    """Re-run only the failed tasks of a job (a new chord), then finalize it again."""
    from api import ops  # noqa: PLC0415 - start-up time

    return ops.retry(
        config, job_id, service or [], actor=actor, wait=wait, timeout=timeout, as_json=json_out
    )


@letters_app.command("list", cls=Command)
def letters_list(
    config: Config = None,
    job: Annotated[
        str | None,
        typer.Option("--job", metavar="JOB_ID", help="Only this job's.", show_default=False),
    ] = None,
    everything: Annotated[bool, typer.Option("--all", help="Include replayed ones.")] = False,
    limit: Annotated[
        int, typer.Option("--limit", metavar="N", min=1, help="How many, newest first.")
    ] = 50,
    json_out: Json = False,
) -> int:
    """Dead letters not replayed yet (--all: every one)."""
    from api import ops  # noqa: PLC0415 - start-up time

    return ops.list_letters(config, job, include_replayed=everything, limit=limit, as_json=json_out)


@letters_app.command("show", cls=Command)
def letters_show(
    letter_id: Annotated[int, typer.Argument(metavar="ID", help="The dead letter's id.")],
    config: Config = None,
    json_out: Json = False,
) -> int:
    """One dead letter: its error, its task's attempts, the traceback's frames."""
    from api import ops  # noqa: PLC0415 - start-up time

    return ops.show_letter(config, letter_id, json_out)


@letters_app.command("replay", cls=Command)
def letters_replay(
    letter_id: Annotated[int, typer.Argument(metavar="ID", help="The dead letter's id.")],
    config: Config = None,
    actor: Actor = "cli",
    wait: Wait = False,
    timeout: Timeout = 600.0,
    json_out: Json = False,
) -> int:
    """Run a dead letter's task again (a new chord over it), then finalize its job."""
    from api import ops  # noqa: PLC0415 - start-up time

    return ops.replay(config, letter_id, actor=actor, wait=wait, timeout=timeout, as_json=json_out)


def beat(
    config: Config = None,
    once: Annotated[bool, typer.Option("--once", help="One round, then exit.")] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="With --once: print what the round did.")
    ] = False,
) -> int:
    """Run the reaper periodically (safe on several replicas).

    Every ERASER_REAPER_INTERVAL_SECONDS: dispatch committed jobs, take over stale
    tasks, finalize finished jobs."""
    from api import ops  # noqa: PLC0415 - start-up time

    return ops.beat(config, once=once, as_json=json_out)


def register(app: typer.Typer) -> None:
    """Add the operators' commands to the root app."""
    app.command("retry", cls=Command, rich_help_panel=PANEL)(retry)
    app.add_typer(letters_app, name="dead-letters", rich_help_panel=PANEL)
    app.command("beat", cls=Command, rich_help_panel=PANEL)(beat)
