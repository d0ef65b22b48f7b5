"""Subject values converted to each column's type, and refused when they do not fit."""

from __future__ import annotations

import datetime
import decimal
import re
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from worker.exceptions import InvalidSubjectValue

#: A whole number as a person writes it: ASCII digits only (``int()`` would also take
#: ``4_2`` and other scripts' digits, and erase subject 42 for them).
_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)
_BOOLEANS = {"true": True, "t": True, "1": True, "false": False, "f": False, "0": False}


def coerce_subject(value: object, column_type: sa.types.TypeEngine[Any], column: str) -> Any:
    """Convert a subject value (often a string from a CLI or a message) to the column's
    type; ``InvalidSubjectValue`` (which never quotes the value) when it does not fit."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes in a command line's argument
            raise InvalidSubjectValue(column, "UTF-8 text") from None
    try:
        python_type = column_type.python_type
    except NotImplementedError:
        return value
    if value is None or (isinstance(value, python_type) and not isinstance(value, bool)):
        return value
    try:
        return _convert(value, python_type)
    except (ValueError, TypeError, KeyError, OverflowError, decimal.InvalidOperation):
        raise InvalidSubjectValue(column, python_type.__name__) from None


def _convert(value: object, python_type: type) -> Any:
    converter = _CONVERTERS.get(python_type)
    if converter is not None:
        return converter(value)
    if python_type in (datetime.datetime, datetime.date, datetime.time):
        if isinstance(value, str):
            return python_type.fromisoformat(value.strip())
        raise TypeError(value)
    return value


def _to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    return _BOOLEANS[str(value).strip().lower()]


def _to_int(value: object) -> int:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    raise ValueError(value)


def _to_decimal(value: object) -> decimal.Decimal:
    number = decimal.Decimal(str(value))
    if not number.is_finite():
        raise ValueError(value)
    return number


#: How a value becomes each Python type a column holds (exact types, no subclasses).
_CONVERTERS: dict[type, Callable[[object], Any]] = {
    bool: _to_bool,
    int: _to_int,
    str: str,
    uuid.UUID: lambda value: uuid.UUID(str(value)),
    decimal.Decimal: _to_decimal,
    float: lambda value: float(str(value)),
    bytes: lambda value: str(value).encode(),
}


_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1


def sendable(subject: object, column_type: sa.types.TypeEngine[Any], column: str) -> Any:
    """``coerce_subject``, with a value the column cannot hold as None: it matches
    nothing, as NULL does. An integer no integer column holds (SQLite's driver could
    not even send it); a text that is none of an enum's labels (PostgreSQL would refuse
    the statement: one service's enum does not fail another's erasure)."""
    value = coerce_subject(subject, column_type, column)
    if isinstance(value, int) and not _BIGINT_MIN <= value <= _BIGINT_MAX:
        return None
    if isinstance(column_type, sa.Enum) and column_type.enums and value not in column_type.enums:
        return None
    return value
