"""The cascade oracle: what erasing the subject must leave behind.

The case is loaded into a twin database whose NO ACTION / RESTRICT keys are rewritten
to ``ON DELETE CASCADE`` (``ddl.create_statements(oracle=True)``), and the subject's
anchor rows (those whose ``tenant_id`` is the subject) are deleted by hand, one
statement per anchor table, in one transaction: the database's own referential
actions then remove and clear exactly what an erasure has to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tests.differential.ddl import Schemas, qualified
from tests.differential.loading import drop, load
from tests.differential.schemas import SUBJECT, Case
from tests.differential.snapshot import Tables, snapshot, table_name


@dataclass(frozen=True)
class Expected:
    before: Tables
    after: Tables
    audit: list[Any]
    #: Report name (``schema.table``) -> rows the cascade removed / changed (no zeros).
    deleted: dict[str, int]
    changed: dict[str, int]
    #: Rows of another owner the cascade removed: a refusal (CrossSubjectReference)
    #: is then a correct answer too.
    others_removed: list[str]


def expected(engine: sa.Engine, case: Case, schemas: Schemas) -> Expected:
    """Run the oracle in ``engine``'s database (left empty of the case afterwards)."""
    load(engine, case, schemas, oracle=True)
    try:
        before, _ = snapshot(engine, case, schemas)
        with engine.begin() as conn:
            for spec in case.tables:
                if spec.tenant:
                    conn.exec_driver_sql(
                        f"DELETE FROM {qualified(case, schemas, spec)} WHERE tenant_id = {SUBJECT}"
                    )
        after, audit = snapshot(engine, case, schemas)
    finally:
        drop(engine, case.backend, schemas)
    deleted: dict[str, int] = {}
    changed: dict[str, int] = {}
    others: list[str] = []
    for i, spec in enumerate(case.tables):
        name = table_name(case, schemas, i)
        gone = set(before[spec.name]) - set(after[spec.name])
        if gone:
            deleted[name] = len(gone)
        edited = sum(1 for k, row in after[spec.name].items() if before[spec.name][k] != row)
        if edited:
            changed[name] = edited
        owner = {row["id"]: o for row, o in zip(case.rows[i], case.owners[i], strict=True)}
        others += [f"{spec.name}#{k}" for k in sorted(gone) if owner[k] != SUBJECT]
    return Expected(before, after, audit, deleted, changed, others)
