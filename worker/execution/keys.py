"""Rows as the walk holds them between statements (their identity and the columns the
references need), and key lists in the order every erasure locks them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from worker.catalog.model import TableName


@dataclass
class Row:
    """One row read by the walk: its identity and the values its references need."""

    rid: tuple[Any, ...]
    values: dict[str, Any]


@dataclass
class Frame:
    """A batch whose references are being cleared (the walk's stack)."""

    table: TableName
    rids: set[tuple[Any, ...]]
    #: Index of the frame whose transaction must also remove this frame's rows.
    deferred_to: int | None = None
    group: list[tuple[TableName, list[Row]]] = field(default_factory=list)


def chunks(items: Sequence[tuple[Any, ...]], size: int) -> Iterator[Sequence[tuple[Any, ...]]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def sorted_keys(values: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Keys in their natural order (so concurrent erasures lock rows in the same order)."""
    items = list(values)
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=repr)
