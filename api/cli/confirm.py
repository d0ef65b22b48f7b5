"""``eraser erase`` asks before it deletes: the counts, then the subject's value (or
``yes``) typed on a terminal. Without a terminal it refuses unless ``--yes`` was
given, so a script never deletes unconfirmed."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from rich.text import Text

from api.cli import display
from api.cli.errors import Refused

if TYPE_CHECKING:
    from models.erasure import ErasureReport


def possible() -> bool:
    """Whether a person can answer: stdin is a terminal."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # a closed stdin
        return False


def ask(counted: ErasureReport, where: str, subject: str) -> None:
    """Show what the erasure would do in ``where`` and wait for the answer; raise
    ``Refused`` unless it is the subject's value or ``yes``. The value itself is never
    printed (it may be personal data): the person types it."""
    console = display.err()
    console.print(display.counts_table(counted))
    console.print(
        Text.assemble(
            "This erases ",
            (f"{counted.total_rows:,}", "bold red"),
            f" row(s) of the subject from {where}; it cannot be undone.",
        )
    )
    console.print("Type the subject's value, or yes, to erase: ", end="")
    console.file.flush()
    answer = sys.stdin.readline()
    if not answer:
        console.print()
        raise Refused("not confirmed (no answer): nothing was erased")
    typed = answer.rstrip("\r\n")
    if typed.strip().lower() != "yes" and typed.strip() != subject.strip():
        raise Refused("not confirmed (the answer was neither the subject's value nor yes)")
