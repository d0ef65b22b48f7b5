"""``eraser demo``: the README's first command (the bakery estate, no server)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from api.cli.errors import EXIT_OK, EXIT_UNVERIFIED
from api.cli.help import Command


def demo(
    tenant: Annotated[
        int, typer.Option("--tenant", metavar="N", help="The tenant to erase (1..--tenants).")
    ] = 2,
    tenants: Annotated[
        int, typer.Option("--tenants", metavar="N", min=1, help="Bakeries (tenants) to seed.")
    ] = 5,
    scale: Annotated[
        float,
        typer.Option("--scale", metavar="X", min=0.01, help="Rows per tenant, relative to 1.0."),
    ] = 1.0,
    workdir: Annotated[
        Path | None,
        typer.Option(
            "--workdir",
            metavar="DIR",
            help="Keep the twelve SQLite databases here. Default: a temporary directory.",
            show_default=False,
        ),
    ] = None,
) -> int:
    """Erase one tenant from the 12-service bakery estate (no server needed).

    Runs the real chord on an embedded broker and worker, then checks what remains."""
    from api.demo import DemoRefused, run_demo  # noqa: PLC0415 - start-up time

    if not 1 <= tenant <= tenants:
        raise DemoRefused(f"--tenant must be between 1 and --tenants ({tenants})")
    ok = run_demo(sys.stdout, workdir, subject=tenant, tenants=tenants, scale=scale)
    return EXIT_OK if ok else EXIT_UNVERIFIED


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the root app."""
    app.command("demo", cls=Command, rich_help_panel="Getting started")(demo)
