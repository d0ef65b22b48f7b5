"""The ``eraser`` command tree: the root app, ``--version``, and every command group.

Adding a command group is two lines here: import its module (which defines
``app = typer.Typer(help=..., cls=Group)`` and its commands, importing their work
inside each command) and ``app.add_typer(module.app, name="...", rich_help_panel=...)``;
for top-level commands, ``module.register(app)``. A new command under an existing group
(``eraser certificate keygen``) is a function decorated with that module's
``@app.command("keygen", cls=Command)`` (``api.cli.help``: Rich help on a terminal,
plain text elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Annotated, Any

import typer

from api.cli import certificate, database, demo, jobs, keys, operations, secrets, server
from api.cli.help import Group

#: The help panel of keys, certificates (and secrets).
SECRETS = "Keys and certificates"

app = typer.Typer(
    name="eraser",
    help="Erase a subject (a tenant, a user, an entity) from relational databases: one "
    "database directly, or every service of an estate through the job queue.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    pretty_exceptions_enable=False,
    cls=Group,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

        try:
            found = version("eraser")
        except PackageNotFoundError:
            found = "unknown (not installed)"
        typer.echo(f"eraser {found}")
        raise typer.Exit()


@app.callback()
def root(
    _version_flag: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print Eraser's version and exit.",
        ),
    ] = False,
) -> None:
    """Erase a subject (a tenant, a user, an entity) from relational databases."""


database.register(app)
demo.register(app)
jobs.register(app)
operations.register(app)
server.register(app)
app.add_typer(keys.app, name="keys", rich_help_panel=SECRETS)
app.add_typer(certificate.app, name="certificate", rich_help_panel=SECRETS)
app.add_typer(secrets.app, name="secrets", rich_help_panel=SECRETS)


@cache
def _command() -> Any:
    """The Click command behind the Typer app (built once; Typer's own Click)."""
    return typer.main.get_command(app)


def run(argv: Sequence[str] | None) -> Any:
    """Parse ``argv`` and run its command; its return value (an exit status), or the
    status of ``--help``/``--version``. Failures are raised to the caller."""
    return _command().main(
        args=None if argv is None else list(argv), prog_name="eraser", standalone_mode=False
    )
