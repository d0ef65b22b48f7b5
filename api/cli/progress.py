"""``eraser erase``'s progress: a Rich bar on a terminal (total from the dry-run count,
rate, ETA, the current table), a plain line per table otherwise (logs), or nothing."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

if TYPE_CHECKING:
    from worker.execution.options import Progress as Batch

ProgressCallback = Callable[["Batch"], None]


class _RowsColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        done = f"{int(task.completed):,}"
        if task.total is None:
            return Text(f"{done} rows", style="progress.download")
        return Text(f"{done}/{int(task.total):,} rows", style="progress.download")


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} rows/s", style="progress.data.speed")


class _Bar:
    """Feeds the executor's per-batch reports into a Rich progress bar."""

    def __init__(self, progress: Progress, total: int | None) -> None:
        self.progress = progress
        self.task = progress.add_task("counting", total=total or None)

    def __call__(self, p: Batch) -> None:
        self.progress.update(
            self.task, completed=p.total_rows, description=f"{p.table} ({p.action.value})"
        )

    def finish(self) -> None:
        task = self.progress.tasks[0]
        total = max(task.completed, task.total or 0)
        self.progress.update(self.task, total=total, completed=total, description="done")


class _Lines:
    """One plain line per table as the erasure leaves it, for logs."""

    def __init__(self, stream: TextIO, total: int | None) -> None:
        self.stream = stream
        self.total = total
        self.last: Batch | None = None
        self.started = time.monotonic()

    def __call__(self, p: Batch) -> None:
        if self.last is not None and (p.table, p.action) != (self.last.table, self.last.action):
            self._line(self.last)
        self.last = p

    def finish(self) -> None:
        if self.last is not None:
            self._line(self.last)

    def _line(self, p: Batch) -> None:
        rows = p.rows_by_table.get(f"{p.table}:{p.action.value}", p.rows)
        so_far = f"{p.total_rows:,}"
        if self.total:
            so_far += f"/{self.total:,} rows ({min(100, 100 * p.total_rows // self.total)}%)"
        else:
            so_far += " rows"
        self.stream.write(
            f"progress: {p.table} {p.action.value}: {rows:,} rows; {so_far} "
            f"in {p.elapsed_seconds:.1f}s\n"
        )
        self.stream.flush()


@contextmanager
def open_progress(mode: str, total: int | None) -> Iterator[ProgressCallback | None]:
    """The callback to give ``erase`` for ``--progress MODE`` (None: show nothing)."""
    if mode == "never":
        yield None
        return
    if mode == "always" or sys.stderr.isatty():
        console = Console(stderr=True, force_terminal=True if mode == "always" else None)
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            _RowsColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, refresh_per_second=8) as progress:
            bar = _Bar(progress, total)
            yield bar
            bar.finish()
        return
    lines = _Lines(sys.stderr, total)
    yield lines
    lines.finish()
