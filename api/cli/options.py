"""Options shared by several command groups."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Config = Annotated[
    Path | None,
    typer.Option(
        "--config",
        metavar="FILE",
        envvar="ERASER_CONFIG",
        help="The registry of subject kinds and services (TOML). Default: services.toml.",
        show_default=False,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of text.")]
Wait = Annotated[bool, typer.Option("--wait", help="Wait until the job ends, then show it.")]
Timeout = Annotated[
    float,
    typer.Option(
        "--timeout", metavar="SECONDS", min=0, help="With --wait: give up after this long (exit 3)."
    ),
]
Actor = Annotated[
    str, typer.Option("--actor", metavar="WHO", help="Who did it, recorded in the audit trail.")
]
