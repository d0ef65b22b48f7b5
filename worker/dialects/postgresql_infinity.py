"""PostgreSQL's ``infinity`` and ``-infinity`` dates and timestamps, kept as such.

psycopg2 reads them as ``date.max`` / ``datetime.max`` (and ``min``), which it then
sends back as the year 9999 or 1: a key read that way names no row, so a row keyed by
``infinity`` could never be removed (a walk repeating the same batch for ever), and the
references to such a key were not found when its row went (left pointing at nothing,
and verified). On Eraser's connections they are read as ``Infinity`` values instead,
which sort after (or before) every date and are sent back as ``'infinity'``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import psycopg2.extensions as ext


@functools.total_ordering
class Infinity:
    """``'infinity'`` (or, ``negative``, ``'-infinity'``) of a date or timestamp."""

    __slots__ = ("negative",)

    def __init__(self, negative: bool) -> None:
        self.negative = negative

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Infinity) and other.negative == self.negative

    def __hash__(self) -> int:
        return hash((Infinity, self.negative))

    def __lt__(self, other: object) -> bool:
        if isinstance(other, Infinity):
            return self.negative and not other.negative
        return self.negative

    def __str__(self) -> str:
        return "-infinity" if self.negative else "infinity"

    def __repr__(self) -> str:
        return f"Infinity(negative={self.negative})"


def _adapt(value: Infinity) -> Any:
    return ext.AsIs(f"'{value}'")


ext.register_adapter(Infinity, _adapt)


def _caster(base: Any) -> Callable[[str | bytes | None, Any], Any]:
    def cast(value: str | bytes | None, cursor: Any) -> Any:
        if value == "infinity":
            return Infinity(False)
        if value == "-infinity":
            return Infinity(True)
        return base(value, cursor)

    return cast


#: date, timestamp, timestamptz and their arrays, by OID.
_SCALARS = (
    (1082, 1182, "DATE", ext.PYDATE),
    (1114, 1115, "TIMESTAMP", ext.PYDATETIME),
    (1184, 1185, "TIMESTAMPTZ", ext.PYDATETIMETZ),
)
_TYPES: list[Any] = []
for _oid, _array_oid, _name, _base in _SCALARS:
    _scalar = ext.new_type((_oid,), f"ERASER_{_name}", _caster(_base))
    _TYPES += [_scalar, ext.new_array_type((_array_oid,), f"ERASER_{_name}[]", _scalar)]


def register(dbapi_connection: Any) -> None:
    """Read infinite dates and timestamps as ``Infinity`` on this connection."""
    for type_ in _TYPES:
        ext.register_type(type_, dbapi_connection)
