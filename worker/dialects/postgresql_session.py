"""PostgreSQL: the subject's value reaches the server in session settings, out of the
statements' text.

The server writes the text of every statement that fails to its log
(``log_min_error_statement = error``, the default), and psycopg2 writes parameters
into that text. So the value goes once per session, in a statement of its own that
cannot fail on what it holds (``SELECT set_config(...)``), and the statements read it
back (``current_setting(...)``, cast to the column's type; a stable expression, so an
index is still used). One setting per kind of value: a subject is one integer, one
text, one uuid... whichever columns it is compared with.

The settings an erasure's session holds are cleared when its connection goes back to
the pool. A statement that reads a setting its session was not given is refused before
it is sent (``check_bound``): a cleared setting reads as an empty text, which must
never be taken for the subject. (The check is the client's: a guard in the SQL costs
a fraction of a microsecond for every row a statement filters.)

Values read from rows can equal the subject's too: the keys of a table keyed by the
subject's column (``tenants.id``, a partitioned table's ``(tenant_id, id)``). On a
session that holds the subject, ``out_of_text`` turns such a parameter (an integer,
an exact text, a uuid, or an element of a one-parameter key array) into the same
read of the setting just before the driver writes the statement.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal, _TraverseInternalsType

#: The exact string types whose values are held as ``text`` (a subtype may compare
#: otherwise: ``citext``, ``char(n)``; those go as parameters).
_TEXT_TYPES = (sa.String, sa.Text, sa.VARCHAR, sa.TEXT, sa.Unicode, sa.UnicodeText, sa.NVARCHAR)
#: Where a pooled connection keeps the names of the settings it holds values in, and
#: the subject's value (as text) for each kind.
_HELD = "eraser.session_values"
_VALUES = "eraser.subject_values"
#: Settings of ours (validated before they are written into a RESET).
_NAME = re.compile(r"eraser\.[a-z_]+")
#: How statements name the subject's settings.
_READS = "current_setting('eraser.subject_"


_KINDS = ("bigint", "text", "uuid", "numeric", "bytea")


def kind_of(type_: sa.types.TypeEngine[Any]) -> str | None:
    """The SQL type a column's subject value is held as, or None when values of that
    type go as parameters (they do not survive a trip through text unchanged, or
    compare otherwise than their column: floats, dates, enums, arrays, ``citext``)."""
    if isinstance(type_, sa.Enum):
        return None
    if isinstance(type_, sa.Integer):
        return "bigint"
    if type(type_) in _TEXT_TYPES:
        return "text"
    if isinstance(type_, sa.Uuid):
        return "uuid"
    if isinstance(type_, sa.Numeric) and not isinstance(type_, sa.Float):
        return "numeric"
    if isinstance(type_, sa.LargeBinary):
        return "bytea"
    return None


class SessionValue(ColumnElement[Any]):
    """The subject's value as a statement reads it from its session's setting ``name``,
    cast to ``kind`` (see the module's docstring)."""

    __visit_name__ = "eraser_session_value"
    inherit_cache = True
    # (A list, as SQLAlchemy declares it: what the statement cache keys on.)
    _traverse_internals: _TraverseInternalsType = [  # noqa: RUF012
        ("name", InternalTraversal.dp_string),
        ("kind", InternalTraversal.dp_string),
        ("type", InternalTraversal.dp_type),
    ]

    def __init__(self, kind: str, type_: sa.types.TypeEngine[Any]) -> None:
        self.kind = kind
        self.name = setting_of(kind)
        self.type = type_


def setting_of(kind: str) -> str:
    return f"eraser.subject_{kind}"


@compiles(SessionValue)
def _compile(element: SessionValue, compiler: SQLCompiler, **_kw: Any) -> str:
    return f"CAST({_text_of(element.kind)} AS {element.kind})"


def _text_of(kind: str) -> str:
    # '=' and the value, or '-' for a value no column of the kind holds (NULL: it
    # matches nothing). One read of the setting: it is evaluated for every row a
    # statement filters (a stable expression, so the planner still sees the value).
    return f"substr(nullif(current_setting('{setting_of(kind)}'), '-'), 2)"


class SubjectNotBound(RuntimeError):
    """A statement reads the subject's value from a session that was not given it."""


def check_bound(info: Mapping[Any, Any], statement: str) -> None:
    """Refuse ``statement`` when it reads a subject's setting its session (``info``,
    the pooled connection's) does not hold."""
    if _READS not in statement:
        return
    held = info.get(_HELD, ())
    for kind in _KINDS:
        if f"current_setting('{setting_of(kind)}')" in statement and setting_of(kind) not in held:
            raise SubjectNotBound(f"the session holds no subject value of kind {kind}")


def session_value(type_: sa.types.TypeEngine[Any]) -> ColumnElement[Any] | None:
    kind = kind_of(type_)
    return None if kind is None else SessionValue(kind, type_)


def as_text(value: Any) -> str:
    """A value as the server reads it back, cast to its kind."""
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    return str(value)


def bind(conn: Connection, values: Iterable[tuple[sa.types.TypeEngine[Any], Any]]) -> None:
    """Put the subject's value for each column type in ``values`` (None: a value no
    column of that type holds) in ``conn``'s session, in one statement. Outside a
    transaction it is committed at once (a later rollback must not take it back);
    inside one it lasts as long as that transaction, or longer if it commits."""
    settings: dict[str, str] = {}
    for type_, value in values:
        kind = kind_of(type_)
        if kind is None:
            continue
        text = "-" if value is None else "=" + as_text(value)
        if settings.setdefault(setting_of(kind), text) != text:
            raise ValueError(f"two {kind} values for one subject")
    if not settings:
        return
    stmt = sa.select(*(sa.func.set_config(n, v, False) for n, v in settings.items()))
    hold(conn, settings)
    if conn.in_transaction():
        conn.execute(stmt)
    else:
        with conn.begin():
            conn.execute(stmt)
    conn.info[_VALUES] = {
        n.removeprefix(setting_of("")): v[1:] for n, v in settings.items() if v != "-"
    }


def hold(conn: Connection, names: Iterable[str]) -> None:
    """Remember that ``conn``'s session holds values in the settings ``names``, to
    clear them when it goes back to its pool (``forget``)."""
    held: set[str] = conn.info.setdefault(_HELD, set())
    held.update(names)


def on_reset(dbapi_connection: Any, record: Any, state: Any) -> None:
    """(A pool ``reset`` hook.) A connection going back to its pool forgets the values
    its session holds; one that cannot is discarded by its pool."""
    if not state.terminate_only and record is not None:
        forget(dbapi_connection, record.info)


def forget(dbapi_connection: Any, info: dict[Any, Any]) -> None:
    """Clear the settings a connection's session holds values in (a connection going
    back to its pool); raises when the connection cannot (its pool discards it)."""
    info.pop(_VALUES, None)
    names = sorted(info.pop(_HELD, ()))
    if not names or dbapi_connection is None:
        return
    if not all(_NAME.fullmatch(n) for n in names):
        raise ValueError("unexpected setting name")
    # (Before the pool's own rollback: whatever the connection was doing is dropped.)
    if not dbapi_connection.autocommit:
        dbapi_connection.rollback()
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("; ".join(f"RESET {n}" for n in names))
    finally:
        cursor.close()
    if not dbapi_connection.autocommit:
        dbapi_connection.commit()


def out_of_text(
    conn: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> tuple[str, Any]:
    """(A ``before_cursor_execute`` hook.) Parameters equal to the subject's value on
    a session that holds it, as reads of its setting; a statement that reads a setting
    its session does not hold is refused (see the module's docstring)."""
    check_bound(conn.info, statement)
    values: Mapping[str, str] | None = conn.info.get(_VALUES)
    compiled = getattr(context, "compiled", None)
    if not values or executemany or not isinstance(parameters, dict) or compiled is None:
        return statement, parameters
    if conn.dialect.driver != "psycopg2":
        return statement, parameters  # (psycopg binds parameters apart from the text)
    from psycopg2.extensions import AsIs  # noqa: PLC0415 - the psycopg2 driver only

    types = _bind_types(compiled)
    changed: dict[str, Any] | None = None
    for name, value in parameters.items():
        sql = _reference(value, types(name), values, cursor)
        if sql is not None:
            changed = changed if changed is not None else dict(parameters)
            changed[name] = AsIs(sql)
    return statement, parameters if changed is None else changed


def _bind_types(compiled: Any) -> Any:
    """The type of a statement's parameter by the name the driver sees (an expanded
    ``IN`` list's elements are ``<name>_<n>``, a list of tuples' ``<name>_<n>_<m>``)."""
    escaped = {v: k for k, v in (getattr(compiled, "escaped_bind_names", None) or {}).items()}
    binds = compiled.binds

    def type_of(name: str) -> sa.types.TypeEngine[Any] | None:
        name = escaped.get(name, name)
        if name in binds:
            return binds[name].type  # type: ignore[no-any-return]
        tuple_element = re.fullmatch(r"(.+)_\d+_(\d+)", name)
        if tuple_element and tuple_element.group(1) in binds:
            types = getattr(binds[tuple_element.group(1)].type, "types", ())
            index = int(tuple_element.group(2)) - 1
            return types[index] if 0 <= index < len(types) else None
        element = re.fullmatch(r"(.+)_\d+", name)
        if element and element.group(1) in binds:
            return binds[element.group(1)].type  # type: ignore[no-any-return]
        return None

    return type_of


def _reference(
    value: Any, type_: sa.types.TypeEngine[Any] | None, values: Mapping[str, str], cursor: Any
) -> str | None:
    """SQL that reads ``value`` from the session, or None when it is not the subject's."""
    if type_ is None or value is None or isinstance(value, bool):
        return None
    kind = kind_of(type_)
    if kind is not None and kind in values and as_text(value) == values[kind]:
        return f"CAST({_text_of(kind)} AS {kind})"
    if isinstance(type_, sa.Text) and isinstance(value, str) and value.startswith("{"):
        return _array_literal(value, values, cursor)
    return None


def _array_literal(literal: str, values: Mapping[str, str], cursor: Any) -> str | None:
    """An array literal (``worker.dialects.postgresql_arrays``) rebuilt on the server,
    each element that is the subject's value read from the session: the same text."""
    elements: list[tuple[str, str]] = []
    if "bigint" in values:
        elements.append((values["bigint"], _text_of("bigint")))
    if "text" in values:
        quoted = '"' + values["text"].replace("\\", "\\\\").replace('"', '\\"') + '"'
        raw = _text_of("text")
        bs, dq = "chr(92)", "chr(34)"
        escaped = f"replace(replace({raw}, {bs}, {bs} || {bs}), {dq}, {bs} || {dq})"
        elements.append((quoted, f"{dq} || {escaped} || {dq}"))
    pattern = "|".join(f"(?<=[{{,]){re.escape(e)}(?=[,}}])" for e, _ in elements)
    if not pattern:
        return None
    sql_of = dict(elements)
    pieces: list[str] = []
    start = 0
    for found in re.finditer(pattern, literal):
        pieces.append(_quoted(cursor, literal[start : found.start()]))
        pieces.append(f"({sql_of[found.group(0)]})")
        start = found.end()
    if not start:
        return None
    pieces.append(_quoted(cursor, literal[start:]))
    return "(" + " || ".join(pieces) + ")"


def _quoted(cursor: Any, text: str) -> str:
    """``text`` as the driver quotes it on the cursor's connection."""
    from psycopg2.extensions import encodings  # noqa: PLC0415 - the psycopg2 driver only

    codec = encodings.get(cursor.connection.encoding, "utf-8")
    return str(cursor.mogrify("%s", (text,)).decode(codec))
