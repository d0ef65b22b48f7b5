"""PostgreSQL's row addresses (``ctid``) and key lists sent as one array parameter."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement


class Tid(sa.types.UserDefinedType[str]):
    """PostgreSQL's physical row address type."""

    cache_ok = True

    def get_col_spec(self, **_kw: Any) -> str:
        return "tid"


def ctid() -> ColumnElement[str]:
    return sa.literal_column("ctid", type_=Tid())


def row_address() -> ColumnElement[str]:
    """PostgreSQL's physical address of a row (unique within one table, not across the
    partitions of a partitioned table)."""
    return ctid()


def addressed_by(chosen: sa.Select[Any]) -> ColumnElement[bool]:
    """PostgreSQL: the rows whose address ``chosen`` selects, as
    ``ctid = ANY(ARRAY(SELECT ctid ...))`` (a TID scan)."""
    return row_address() == sa.any_(sa.func.array(chosen.scalar_subquery()))


def pg_array(values: Sequence[Any], element: sa.types.TypeEngine[Any]) -> ColumnElement[Any]:
    """A PostgreSQL array of ``values`` for ``= ANY(...)``, as one parameter.

    Integers (as ``BIGINT[]``), strings (as ``TEXT[]``) and row addresses go as one
    array literal, read by the server's array input function; anything else is bound
    as the driver adapts it. A list bound as ``ARRAY[...]`` costs the driver and the
    server about 2 ms per 2,000 keys (docs/design/engine-notes.md, "Key lists")."""
    as_type: sa.types.TypeEngine[Any] | None = None
    text: Callable[[Any], str] | None = None
    if isinstance(element, sa.Integer) and not isinstance(element, sa.Enum):
        as_type, text = sa.BigInteger(), _int_element
    elif isinstance(element, Tid):
        as_type, text = Tid(), _quoted_element
    elif isinstance(element, sa.String) and not isinstance(element, (sa.CHAR, sa.NCHAR, sa.Enum)):
        as_type, text = sa.Text(), _quoted_element
    if as_type is not None and text is not None:
        literal: str | None = None
        if text is _int_element and set(map(type, values)) <= {int}:
            literal = "{" + ",".join(map(str, values)) + "}"  # the common case, at C speed
        else:
            with suppress(_NotLiteral):
                literal = "{" + ",".join(text(v) for v in values) + "}"
        if literal is not None:
            return sa.cast(sa.bindparam(None, literal, type_=sa.Text), postgresql.ARRAY(as_type))
    return sa.bindparam(None, list(values), type_=postgresql.ARRAY(element))


class _NotLiteral(Exception):
    """A value this array literal cannot carry as it is: bind the list instead."""


def _int_element(value: Any) -> str:
    if value is None:
        return "NULL"
    if type(value) is not int:
        raise _NotLiteral()
    return str(value)


def _quoted_element(value: Any) -> str:
    """One element of an array literal: double-quoted, ``\\`` and ``"`` escaped."""
    if value is None:
        return "NULL"
    if not isinstance(value, str):
        raise _NotLiteral()
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
