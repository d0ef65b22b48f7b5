"""Hand-written regression cases: run a script, read tables back, compare.

The regression tests state the oracle's outcome (what the database's own cascade
leaves) as rows; these helpers load the SQL and read every row back so the test
compares whole tables, and check a refusal left the database exactly as it was.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tests.differential.sessions import bounded_engine

Rows = list[tuple[Any, ...]]


def run(url: str, statements: Iterable[str]) -> None:
    """Run ``statements`` in one transaction of a bounded session."""
    engine = bounded_engine(url)
    try:
        with engine.begin() as conn:
            for stmt in statements:
                conn.exec_driver_sql(stmt)
    finally:
        engine.dispose()


def tables(url: str, names: Iterable[str]) -> dict[str, Rows]:
    """Every row of each table, sorted."""
    engine = bounded_engine(url)
    try:
        with engine.connect() as conn:
            return {
                name: sorted(tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {name}"))
                for name in names
            }
    finally:
        engine.dispose()
