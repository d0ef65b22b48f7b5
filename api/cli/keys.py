"""``eraser keys create``: an API key, its secret shown once."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Annotated

import typer

from api.cli.errors import EXIT_OK
from api.cli.help import Command, Group
from api.cli.options import Json

app = typer.Typer(help="API keys for the HTTP API.", no_args_is_help=True, cls=Group)


class KeyScope(StrEnum):
    """``api.keys.Scope``'s values (kept here: the settings load slowly)."""

    SUBMIT = "jobs:submit"
    READ = "jobs:read"
    ADMIN = "jobs:admin"


@app.command("create", cls=Command)
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
    from api.keys import Scope, create_key  # noqa: PLC0415 - start-up time

    key = create_key(name, [Scope(s.value) for s in scope])
    entry = key.entry.model_dump()
    if json_out:
        sys.stdout.write(json.dumps({"id": key.id, "secret": key.secret, "entry": entry}) + "\n")
        return EXIT_OK
    sys.stdout.write(
        f"key {key.id} ({name}): {', '.join(entry['scopes'])}\n"
        f"secret (shown once, give it to the client): {key.secret}\n"
        f"add this entry to ERASER_API_KEYS (a JSON list):\n{json.dumps(entry)}\n"
    )
    return EXIT_OK
