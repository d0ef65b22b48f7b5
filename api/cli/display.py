"""Rich consoles and the erasure report as people read it.

Consoles are made per call: Rich then writes to whatever ``sys.stdout`` is at that
moment (a test's capture, a pipe) and decides colour and width from it; without a
terminal it prints plain text.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from models.erasure import ErasureReport

#: How each action reads in a report, and its colour.
ACTION_STYLE = {
    "delete": "red",
    "unlink": "yellow",
    "delete_if_orphaned": "yellow",
    "anonymize": "magenta",
    "nullify": "cyan",
    "reassign": "blue",
    "keep": "green",
}


def _width(stream: TextIO) -> int | None:
    """A terminal's own width; 160 columns (or $COLUMNS) for a pipe or a file, where
    Rich would otherwise wrap at 80 and split log lines."""
    if stream.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() else 160


def out() -> Console:
    """A console on stdout."""
    return Console(highlight=False, width=_width(sys.stdout))


def err() -> Console:
    """A console on stderr (prompts, progress)."""
    return Console(stderr=True, highlight=False, width=_width(sys.stderr))


def counts_table(report: ErasureReport) -> Table:
    """The tables where the report counted rows (zero lines left out)."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("table")
    table.add_column("action")
    table.add_column("rows", justify="right")
    for t in report.tables:
        if t.rows:
            style = ACTION_STYLE.get(t.action.value, "")
            table.add_row(t.table, Text(t.action.value, style=style), f"{t.rows:,}")
    return table


def report(report: ErasureReport) -> RenderableType:
    """The report of an erasure or a dry run: a title, the non-zero counts, the
    verification and the warnings."""
    parts: list[RenderableType] = []
    verb = "would be removed (dry run, nothing written)" if report.dry_run else "removed"
    parts.append(
        Text.assemble(
            (f"{report.total_rows:,}", "bold"),
            f" row(s) {verb} in {report.elapsed_seconds:.2f}s",
        )
    )
    parts.append(counts_table(report))
    quiet = sum(1 for t in report.tables if not t.rows)
    if quiet:
        parts.append(Text(f"({quiet} other step(s) found no rows)", style="dim"))
    if not report.dry_run:
        if report.verified:
            line = Text(f"verified: no row of the subject remains ({report.passes} pass(es))")
            line.stylize("green")
        else:
            line = Text(f"NOT verified: rows of the subject remain ({report.passes} pass(es))")
            line.stylize("bold red")
        parts.append(line)
    parts.extend(Text(f"warning: {w}", style="yellow") for w in report.warnings)
    return Group(*parts)


def jobs_table(views: list[dict[str, Any]]) -> RenderableType:
    """``eraser jobs``: one row per job, with a header."""
    if not views:
        return Text("no jobs", style="dim")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name, justify in (
        ("job", "left"),
        ("status", "left"),
        ("kind", "left"),
        ("mode", "left"),
        ("rows", "right"),
        ("created (UTC)", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for v in views:
        state = str(v["status"])
        style = {"succeeded": "green", "failed": "red", "partially_failed": "red"}.get(state, "")
        table.add_row(
            str(v["id"]),
            Text(state, style=style),
            str(v["subject_kind"]),
            "dry run" if v["dry_run"] else "erasure",
            f"{v['total_rows']:,}",
            str(v["created_at"])[:19].replace("T", " "),
        )
    return table


def services_table(views: list[dict[str, Any]]) -> RenderableType:
    """``eraser services``: one row per registered service (never a DSN)."""
    if not views:
        return Text("no services", style="dim")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in ("service", "kind", "subject kinds", "queue", "reads its address from"):
        table.add_column(name)
    for v in views:
        table.add_row(
            str(v["name"]),
            str(v["kind"]),
            ", ".join(v["subjects"]) or "-",
            str(v["queue"] or "default"),
            str(v["address_env"] or "-"),
        )
    return table
