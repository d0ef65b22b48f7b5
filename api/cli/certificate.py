"""``eraser certificate show|verify``: a finished job's signed evidence."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated

import typer

from api.cli.options import Config

app = typer.Typer(help="Erasure certificates.", no_args_is_help=True)


@app.command("show")
def show(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="A finished job's id.")],
    config: Config = None,
) -> int:
    """Print a finished job's signed certificate (JSON)."""
    from api import serve  # noqa: PLC0415 - start-up time

    return serve.cmd_certificate_show(argparse.Namespace(config=config, job_id=job_id))


@app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A certificate ('-' reads stdin).")],
    config: Config = None,
) -> int:
    """Check a certificate's signature; names every field that was altered (exit 1)."""
    from api import serve  # noqa: PLC0415 - start-up time

    return serve.cmd_certificate_verify(argparse.Namespace(config=config, file=file))
