"""``eraser secrets generate``: fresh values for every server-side secret."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from api.cli.errors import EXIT_OK
from api.cli.help import Command, Group

app = typer.Typer(help="The secrets a deployment needs.", no_args_is_help=True, cls=Group)


@app.command("generate", cls=Command)
def generate(
    env: Annotated[
        bool, typer.Option("--env", help="As shell export lines (the only format; the default).")
    ] = True,
) -> int:
    """Print one ``export NAME=VALUE`` line per secret (signing key, subject-hash pepper,
    job-store encryption key): ``eval "$(eraser secrets generate --env)"``."""
    from api import certificates  # noqa: PLC0415 - start-up time

    del env  # one format today; the flag makes scripts say what they expect
    sys.stdout.write(certificates.generate_secrets_env())
    return EXIT_OK
