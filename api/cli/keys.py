"""``eraser keys create``: an API key, its secret shown once."""

from __future__ import annotations

import argparse
from enum import StrEnum
from typing import Annotated

import typer

from api.cli.options import Json

app = typer.Typer(help="API keys for the HTTP API.", no_args_is_help=True)


class KeyScope(StrEnum):
    """``api.keys.Scope``'s values (kept here: the settings load slowly)."""

    SUBMIT = "jobs:submit"
    READ = "jobs:read"
    ADMIN = "jobs:admin"


@app.command("create")
def create(
    name: Annotated[
        str, typer.Option("--name", metavar="NAME", help="Who holds it.", show_default=False)
    ],
    scope: Annotated[
        list[KeyScope],
        typer.Option("--scope", help="What it may do (repeatable).", show_default=False),
    ],
    json_out: Json = False,
) -> int:
    """Make a key: prints its secret once and the entry to add to ERASER_API_KEYS."""
    from api import serve  # noqa: PLC0415 - start-up time

    args = argparse.Namespace(name=name, scope=[s.value for s in scope], json=json_out)
    return serve.cmd_keys_create(args)
