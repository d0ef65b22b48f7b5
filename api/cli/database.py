"""``eraser plan`` and ``eraser erase``: one database, driven directly by the engine
(no broker, no job store). The work happens in ``api.cli.target``, imported when a
command runs."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from api.cli.help import Command

PANEL = "One database (no broker, no job store)"

#: Option groups of ``eraser erase --help``.
TARGET = "What to erase"
SAFETY = "Safety and output"
TUNING = "Tuning"


class FkChecks(StrEnum):
    """Who checks the references into removed rows (``worker.execution.options.FK_CHECKS``)."""

    AUTO = "auto"
    DATABASE = "database"
    ERASER = "eraser"


class PartitionMode(StrEnum):
    """What becomes of a subject's own LIST partition
    (``worker.execution.options.PARTITION_MODES``)."""

    TRUNCATE = "truncate"
    DROP = "drop"
    ROWS = "rows"


class ProgressMode(StrEnum):
    """When ``eraser erase`` draws its progress bar."""

    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


Db = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="URL",
        rich_help_panel=TARGET,
        help="Database URL: postgresql://, mysql:// (PyMySQL), mariadb:// or sqlite:///. "
        "Exactly one of --db and --db-env.",
        show_default=False,
    ),
]
DbEnv = Annotated[
    str | None,
    typer.Option(
        "--db-env",
        metavar="VAR",
        rich_help_panel=TARGET,
        help="Name of an environment variable holding the URL (keeps it out of the process list).",
        show_default=False,
    ),
]
SubjectColumns = Annotated[
    list[str],
    typer.Option(
        "--subject-column",
        metavar="COL",
        rich_help_panel=TARGET,
        help="Subject column: COL (every table that has it), TABLE.COL or SCHEMA.TABLE.COL. "
        "Repeatable.",
        show_default=False,
    ),
]
Schemas = Annotated[
    list[str] | None,
    typer.Option(
        "--schema",
        metavar="NAME",
        rich_help_panel=TARGET,
        help="Schema to reflect (repeatable). Default: every user schema (PostgreSQL), the "
        "connection's database and those its foreign keys point into (MySQL).",
        show_default=False,
    ),
]
Policies = Annotated[
    list[str] | None,
    typer.Option(
        "--policy",
        metavar="TABLE=ACTION",
        rich_help_panel=TARGET,
        help="Table policy: keep | unlink | delete_if_orphaned | anonymize:COL=VALUE,... "
        "(repeatable).",
        show_default=False,
    ),
]
Json = Annotated[
    bool,
    typer.Option(
        "--json", rich_help_panel=SAFETY, help="Print one JSON object on stdout instead of text."
    ),
]


def plan(
    db: Db = None,
    db_env: DbEnv = None,
    subject_column: SubjectColumns = ...,  # type: ignore[assignment]
    subject: Annotated[
        str | None,
        typer.Option(
            "--subject",
            rich_help_panel=TARGET,
            metavar="VALUE",
            help="The subject's value: adds the exact count of its rows to every table "
            "(a dry run, read-only). Without it, the plan only.",
            show_default=False,
        ),
    ] = None,
    schema: Schemas = None,
    policy: Policies = None,
    json_out: Json = False,
) -> int:
    """Show the erasure plan: a tree per anchor table, children under their parents.

    Marks cycles and how they are broken, nullified references and the table policies
    (keep, unlink, anonymize, delete if orphaned). With --json: the ordered steps
    (children first), cycles, warnings and the schema fingerprint, as one object.
    """
    from api.cli import target  # noqa: PLC0415 - the engine loads only when a command runs

    request = target.Request(db, db_env, subject_column, subject, schema or [], policy or [])
    return target.show_plan(request, as_json=json_out)


def erase(
    db: Db = None,
    db_env: DbEnv = None,
    subject_column: SubjectColumns = ...,  # type: ignore[assignment]
    subject: Annotated[
        str,
        typer.Option(
            "--subject",
            metavar="VALUE",
            rich_help_panel=TARGET,
            help="The subject's value.",
            show_default=False,
        ),
    ] = ...,  # type: ignore[assignment]
    schema: Schemas = None,
    policy: Policies = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            rich_help_panel=SAFETY,
            help="Count only, in a read-only transaction; ask nothing.",
        ),
    ] = False,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            "-y",
            rich_help_panel=SAFETY,
            help="Erase without asking (scripts). Without it, the counts are shown and the "
            "subject's value or 'yes' must be typed on a terminal.",
        ),
    ] = False,
    count: Annotated[
        bool,
        typer.Option(
            "--count/--no-count",
            rich_help_panel=SAFETY,
            help="Count the rows first (a dry run, a fraction of the erasure's time): the "
            "progress bar's total. --no-count (with --yes) starts at once.",
        ),
    ] = True,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            metavar="N",
            min=1,
            envvar="ERASER_BATCH_SIZE",
            rich_help_panel=TUNING,
            help="Rows per transaction: larger is faster, smaller holds locks shorter.",
        ),
    ] = 2000,
    lock_timeout_ms: Annotated[
        int,
        typer.Option(
            "--lock-timeout-ms",
            metavar="MS",
            min=1,
            envvar="ERASER_LOCK_TIMEOUT_MS",
            rich_help_panel=TUNING,
            help="How long one batch waits for a row lock.",
        ),
    ] = 5000,
    fk_checks: Annotated[
        FkChecks,
        typer.Option(
            "--fk-checks",
            rich_help_panel=TUNING,
            help="Who checks references into removed rows: the database's triggers, or "
            "Eraser under the batch's row locks (PostgreSQL; faster). auto: Eraser when the "
            "role may set session_replication_role.",
        ),
    ] = FkChecks.AUTO,
    server_batches: Annotated[
        bool,
        typer.Option(
            "--server-batches/--no-server-batches",
            rich_help_panel=TUNING,
            help="PostgreSQL: run the commonest walks' batches inside the server, many to a "
            "round trip (--no-server-batches: every statement from here).",
        ),
    ] = True,
    compress_wal: Annotated[
        bool,
        typer.Option(
            "--compress-wal/--no-compress-wal",
            rich_help_panel=TUNING,
            help="PostgreSQL: write the batches' full-page images to the WAL compressed "
            "(lz4), where the role may set wal_compression and the server does not already.",
        ),
    ] = True,
    partitions: Annotated[
        PartitionMode,
        typer.Option(
            "--partitions",
            rich_help_panel=TUNING,
            help="A subject's own LIST partition (PostgreSQL, MariaDB): truncate it (kept, "
            "empty), drop it (detached and dropped), or erase its rows in batches.",
        ),
    ] = PartitionMode.TRUNCATE,
    progress: Annotated[
        ProgressMode,
        typer.Option(
            "--progress",
            rich_help_panel=SAFETY,
            help="auto: a progress bar on a terminal, a plain line per table otherwise "
            "(logs); always: the bar; never: nothing.",
        ),
    ] = ProgressMode.AUTO,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            rich_help_panel=SAFETY,
            help="No progress display (as --progress never).",
        ),
    ] = False,
    json_out: Json = False,
) -> int:
    """Erase the subject's rows (or count them, with --dry-run), then verify none remain.

    Children go before parents, in short locked batches. On a terminal the counts are
    shown first and the subject's value (or yes) must be typed; --yes for scripts.

    Exit status: 0 erased and verified; 1 rows of the subject remain after the
    erasure; 2 bad input, an unreachable database or no confirmation; 4 nothing
    matched (the subject has no row here; nothing was changed); 130 interrupted
    (committed batches stay done: run it again to finish).
    """
    from api.cli import target  # noqa: PLC0415 - the engine loads only when a command runs

    request = target.Request(db, db_env, subject_column, subject, schema or [], policy or [])
    run = target.Run(
        dry_run=dry_run,
        confirmed=yes,
        count=count,
        batch_size=batch_size,
        lock_timeout_ms=lock_timeout_ms,
        fk_checks=fk_checks.value,
        server_batches=server_batches,
        compress_wal=compress_wal,
        partitions=partitions.value,
        progress="never" if quiet else progress.value,
        as_json=json_out,
    )
    return target.run_erase(request, run)


def register(app: typer.Typer) -> None:
    """Add ``plan`` and ``erase`` to the root app."""
    app.command("plan", cls=Command, rich_help_panel=PANEL)(plan)
    app.command("erase", cls=Command, rich_help_panel=PANEL)(erase)
