"""How a table is partitioned: by which method, on which columns.

Only the scheme is kept in the catalog, never the partitions themselves: partitions
come and go with tenants, and a catalog (and the plans cached on its fingerprint) must
not change each time one is added. Which partition holds a subject is asked of the
database at erasure time (``worker.execution.partitions``).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

#: Partitioning methods, as the catalog spells them.
LIST = "list"
HASH = "hash"
RANGE = "range"

_PG_METHODS = {"l": LIST, "h": HASH, "r": RANGE}


@dataclass(frozen=True)
class PartitionScheme:
    """A partitioned table's method and its key columns (empty for a key on an
    expression)."""

    method: str
    columns: tuple[str, ...]


def partition_schemes(conn: Connection, dialect: str, schema: str) -> dict[str, PartitionScheme]:
    """Table name -> its partitioning scheme, for the partitioned tables of ``schema``."""
    if dialect == "postgresql":
        return _postgresql(conn, schema)
    if dialect == "mysql":
        return _mysql(conn, schema)
    return {}


def _postgresql(conn: Connection, schema: str) -> dict[str, PartitionScheme]:
    rows = conn.execute(
        sa.text(
            "SELECT c.relname, p.partstrat,"
            " ARRAY(SELECT a.attname FROM unnest(p.partattrs::int2[]) WITH ORDINALITY k(n, i)"
            "  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.n ORDER BY k.i),"
            " p.partexprs IS NOT NULL"
            " FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = :schema AND NOT c.relispartition"
        ),
        {"schema": schema},
    )
    found = {}
    for name, strategy, columns, on_expression in rows:
        cols = () if on_expression else tuple(columns)
        found[name] = PartitionScheme(_PG_METHODS.get(strategy, str(strategy)), cols)
    return found


def _mysql(conn: Connection, schema: str) -> dict[str, PartitionScheme]:
    rows = conn.execute(
        sa.text(
            "SELECT DISTINCT TABLE_NAME, PARTITION_METHOD, PARTITION_EXPRESSION"
            " FROM information_schema.PARTITIONS"
            " WHERE TABLE_SCHEMA = :schema AND PARTITION_NAME IS NOT NULL"
        ),
        {"schema": schema},
    )
    found = {}
    for name, method, expression in rows:
        words = [w for w in str(method or "").lower().split() if w not in ("linear", "columns")]
        kind = words[0] if words else ""
        if kind == "key":
            kind = HASH  # KEY partitioning hashes with the server's own function
        found[name] = PartitionScheme(kind, _mysql_columns(str(expression or "")))
    return found


def _mysql_columns(expression: str) -> tuple[str, ...]:
    """``\\`a\\`,\\`b\\``` -> (a, b); an expression (``YEAR(d)``) -> ()."""
    columns = []
    for part in split_top_level(expression):
        text = part.strip()
        if len(text) < 2 or not (text.startswith("`") and text.endswith("`")):
            return ()
        inner = text[1:-1]
        if "`" in inner.replace("``", ""):
            return ()
        columns.append(inner.replace("``", "`"))
    return tuple(columns)


def split_top_level(text: str) -> list[str]:
    """Split on commas outside backquotes, quotes and parentheses."""
    parts: list[str] = []
    current: list[str] = []
    quote = ""
    depth = 0
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "`'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts
