"""The databases the engine works on, one module each, behind one ``Dialect`` interface.

``dialect_of(engine)`` gives the object to ask; ``dialect_named(catalog.dialect)`` the
same from a plan's recorded name. Nothing outside this package compares names.
"""

from __future__ import annotations

import sqlalchemy as sa

from worker.dialects.base import Dialect
from worker.dialects.mysql import MySQL
from worker.dialects.postgresql import PostgreSQL
from worker.dialects.sqlite import SQLite

#: Every supported database, in the order their errors are recognised.
DIALECTS: tuple[Dialect, ...] = (PostgreSQL(), MySQL(), SQLite())
_BY_NAME = {name: d for d in DIALECTS for name in (d.name, *d.aliases)}


def known_dialect(name: str) -> Dialect | None:
    """The dialect SQLAlchemy's ``name`` (or a backend name) stands for, if supported."""
    return _BY_NAME.get(name)


def dialect_named(name: str) -> Dialect:
    """The dialect called ``name``; ``ValueError`` for a database Eraser does not support."""
    found = _BY_NAME.get(name)
    if found is None:
        raise ValueError(f"unsupported database dialect {name!r}")
    return found


def dialect_of(bind: sa.Engine | sa.Connection) -> Dialect:
    """The dialect of an engine or connection."""
    return dialect_named(bind.dialect.name)


def is_foreign_key_violation(exc: sa.exc.DBAPIError) -> bool:
    """Whether a driver error is a foreign-key violation (by SQLSTATE or driver code)."""
    return any(d.is_foreign_key_violation(exc) for d in DIALECTS)
