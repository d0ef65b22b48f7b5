"""The one place the harness calls Eraser's engine.

It does what ``eraser erase --db URL --subject-column COL --subject VALUE`` does:
reflect the catalog, build the plan, then dry-run or erase. When the engine's modules
move, only this function changes.
"""

from __future__ import annotations

from collections.abc import Sequence

from models.erasure import ErasureReport
from tests.differential.sessions import STATEMENT_SECONDS, bounded_url
from worker.catalog.reflection import reflect
from worker.database import create_engine
from worker.execution.erasure import dry_run, erase
from worker.execution.options import ExecutionOptions
from worker.planning.building import build_plan

#: The engine's default batch size (``ExecutionOptions.batch_size``).
DEFAULT_BATCH = ExecutionOptions().batch_size


def erase_subject(
    url: str,
    subject_columns: Sequence[str],
    subject: object,
    batch_size: int = DEFAULT_BATCH,
    *,
    count_only: bool = False,
    schemas: Sequence[str] | None = None,
    statement_seconds: int = STATEMENT_SECONDS,
) -> ErasureReport:
    """Erase ``subject`` (or, with ``count_only``, dry-run it) and return the report.

    Eraser's sessions get a server-side limit of ``statement_seconds`` per statement.
    Raises what the engine raises (``EraserError`` subclasses for a refusal).
    """
    engine = create_engine(bounded_url(url, statement_seconds), existing=True)
    try:
        plan = build_plan(reflect(engine, schemas), list(subject_columns))
        if count_only:
            return dry_run(engine, plan, subject)
        return erase(engine, plan, subject, ExecutionOptions(batch_size=batch_size))
    finally:
        engine.dispose()
