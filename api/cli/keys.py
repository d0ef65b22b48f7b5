"""``eraser keys create|revoke|list``: API keys, their secret shown once.

``create`` prints the entry for ``ERASER_API_KEYS``, or with ``--file`` adds it to the
keys file (``ERASER_API_KEYS_FILE``) that a running API re-reads; ``revoke`` removes
an entry from that file (the API refuses the key within a second); ``list`` shows the
file's entries (never a secret: the file has none).
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from api.cli.errors import EXIT_OK, Refused
from api.cli.help import Command, Group
from api.cli.options import Json

app = typer.Typer(help="API keys for the HTTP API.", no_args_is_help=True, cls=Group)

#: ``--expires-in``'s units.
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION = re.compile(r"^(\d{1,6})([mhdw])$")


class KeyScope(StrEnum):
    """``api.keys.Scope``'s values (kept here: the settings load slowly)."""

    SUBMIT = "jobs:submit"
    READ = "jobs:read"
    ADMIN = "jobs:admin"


KeysFile = Annotated[
    Path | None,
    typer.Option(
        "--file",
        metavar="FILE",
        envvar="ERASER_API_KEYS_FILE",
        help="The keys file a running API re-reads (ERASER_API_KEYS_FILE).",
        show_default=False,
    ),
]


def expiry(expires_in: str | None, expires_at: datetime | None) -> datetime | None:
    """The moment a new key expires: ``--expires-in 30d`` from now, or ``--expires-at``."""
    if expires_in is not None and expires_at is not None:
        raise Refused("give --expires-in or --expires-at, not both")
    if expires_at is not None:
        return expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)
    if expires_in is None:
        return None
    match = _DURATION.fullmatch(expires_in.strip())
    if match is None:
        raise Refused("--expires-in takes a number and a unit: 30m, 12h, 90d or 4w")
    amount, unit = int(match[1]), _UNITS[match[2]]
    return datetime.now(UTC).replace(microsecond=0) + timedelta(**{unit: amount})


@app.command("create", cls=Command)
def create(
    name: Annotated[
        str, typer.Option("--name", metavar="NAME", help="Who holds it.", show_default=False)
    ],
    scope: Annotated[
        list[KeyScope],
        typer.Option("--scope", help="What it may do (repeatable).", show_default=False),
    ],
    expires_in: Annotated[
        str | None,
        typer.Option("--expires-in", metavar="N[mhdw]", help="Expires after this long (90d)."),
    ] = None,
    expires_at: Annotated[
        datetime | None,
        typer.Option("--expires-at", metavar="DATE", help="Expires at this moment (UTC)."),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            metavar="FILE",
            envvar="ERASER_API_KEYS_FILE",
            help="Add the entry to this keys file (ERASER_API_KEYS_FILE; created if missing) "
            "instead of printing it.",
            show_default=False,
        ),
    ] = None,
    json_out: Json = False,
) -> int:
    """Make a key: prints its secret once, and the entry to add to ERASER_API_KEYS (or
    adds it to the keys file)."""
    from api.keys import Scope, create_key, read_keys_file, write_keys_file  # noqa: PLC0415

    key = create_key(name, [Scope(s.value) for s in scope], expiry(expires_in, expires_at))
    entry = key.entry.model_dump(mode="json", exclude_none=True)
    if file is not None:
        write_keys_file(file, [*(read_keys_file(file) if file.exists() else []), key.entry])
    if json_out:
        sys.stdout.write(json.dumps({"id": key.id, "secret": key.secret, "entry": entry}) + "\n")
        return EXIT_OK
    until = f", expires {entry['expires_at']}" if "expires_at" in entry else ""
    where = (
        f"added to {file}: running APIs accept it within a second\n"
        if file is not None
        else f"add this entry to ERASER_API_KEYS (a JSON list):\n{json.dumps(entry)}\n"
    )
    sys.stdout.write(
        f"key {key.id} ({name}): {', '.join(entry['scopes'])}{until}\n"
        f"secret (shown once, give it to the client): {key.secret}\n{where}"
    )
    return EXIT_OK


@app.command("revoke", cls=Command)
def revoke(
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="The key's id (ek_<id>_...).")],
    file: KeysFile = None,
) -> int:
    """Remove a key from the keys file: running APIs refuse it within a second, and its
    console sessions end. (A key in ERASER_API_KEYS needs that variable changed and a
    restart.)"""
    from api.keys import read_keys_file, write_keys_file  # noqa: PLC0415

    if file is None:
        raise Refused("name the keys file: --file or ERASER_API_KEYS_FILE")
    entries = read_keys_file(file)
    kept = [e for e in entries if e.id != key_id]
    if len(kept) == len(entries):
        raise Refused(f"no key {key_id} in {file}")
    write_keys_file(file, kept)
    sys.stdout.write(f"key {key_id} revoked: removed from {file}\n")
    return EXIT_OK


@app.command("list", cls=Command)
def list_keys(file: KeysFile = None, json_out: Json = False) -> int:
    """The keys file's keys: id, name, scopes and expiry (never a secret)."""
    from api.keys import read_keys_file  # noqa: PLC0415

    if file is None:
        raise Refused("name the keys file: --file or ERASER_API_KEYS_FILE")
    entries = read_keys_file(file)
    if json_out:
        rows = [e.model_dump(mode="json", exclude={"hash"}, exclude_none=True) for e in entries]
        sys.stdout.write(json.dumps(rows) + "\n")
        return EXIT_OK
    for e in entries:
        state = "expired" if e.expired() else f"expires {e.expires_at}" if e.expires_at else ""
        sys.stdout.write(f"{e.id}  {e.name}  {','.join(e.scopes)}  {state}".rstrip() + "\n")
    return EXIT_OK
