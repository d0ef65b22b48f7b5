"""What one DELETE removed, brought back as the statements after it need it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from worker.execution.serverloop import aggregated


@dataclass
class Gone:
    """What one DELETE removed, as the sweeps below it need it."""

    count: int
    #: Referenced column -> its values, one per removed row (aligned across columns).
    columns: dict[str, list[Any]]
    #: Whether a removed row belonged to another subject.
    foreign: bool
    #: The greatest key removed (keyset walks).
    last: tuple[Any, ...] | None


def _arrayable(type_: sa.types.TypeEngine[Any]) -> bool:
    """Types whose arrays the PostgreSQL driver decodes by itself."""
    return isinstance(type_, (sa.Integer, sa.String)) and not isinstance(type_, sa.Enum)


def delete_returning(
    conn: Connection,
    stmt: sa.Delete | sa.Update,
    target: sa.Table,
    referenced: Sequence[str],
    foreign: ColumnElement[bool] | None,
    keys: Sequence[ColumnElement[Any]] = (),
    sort_key: Callable[[tuple[Any, ...]], Any] = tuple,
) -> Gone:
    """Run ``stmt`` (PostgreSQL) and bring back what the sweeps need: the count, the
    removed rows' ``referenced`` columns, whether any row matched ``foreign``, and the
    greatest of ``keys``. Where the types allow it, they come aggregated into one row
    of arrays, which the driver decodes in C (a row per removed row costs the walk
    about a fifth of its time)."""
    cols = [target.c[c] for c in referenced]
    flag = [] if foreign is None else [foreign.label("foreign")]
    # (The greatest of several key columns is not each column's greatest.)
    simple = len(keys) <= 1 and all(_arrayable(c.type) for c in [*cols, *keys])
    if simple and (cols or keys or flag):
        row = conn.execute(aggregated(stmt, cols, keys, foreign)).one()
        count = int(row[0])
        values = {c: list(row[1 + i] or []) for i, c in enumerate(referenced)}
        at = 1 + len(cols)
        last = tuple(row[at : at + len(keys)]) if keys else None
        return Gone(count, values, bool(flag and row[-1]), last)
    if not (cols or keys or flag):
        return Gone(int(conn.execute(stmt).rowcount), {}, False, None)
    raw = conn.execute(stmt.returning(*cols, *keys, *flag)).all()
    values = {c: [r[i] for r in raw] for i, c in enumerate(referenced)}
    k = len(cols)
    last = None
    if keys and raw:
        last = max((tuple(r[k : k + len(keys)]) for r in raw), key=sort_key)
    return Gone(len(raw), values, bool(flag and any(r[-1] for r in raw)), last)
