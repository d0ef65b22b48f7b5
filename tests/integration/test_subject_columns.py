"""Several subject columns on one table, holding different values: a row holding the
subject's value in any of them is the subject's (``EmployeeId`` and ``ReportsTo`` both
named: the subject's reports go too), and the rows referencing it are handled as
usual: erased with it, or refused when they are another subject's."""

from __future__ import annotations

import pytest

from tests.conftest import TargetDB
from tests.integration.outcomes import dump, rows
from worker.catalog.reflection import reflect
from worker.exceptions import CrossSubjectReference
from worker.execution.erasure import dry_run, erase
from worker.execution.options import ExecutionOptions
from worker.planning.building import build_plan

ENGINES = ["sqlite", "postgresql", "mysql"]
COLUMNS = ["employees.EmployeeId", "employees.ReportsTo"]


def _staff(db: TargetDB, *employees: str) -> None:
    """Employee 2 (the subject) reports to 1; 3 reports to 2; 5 reports to 1. Each
    has an invoice."""
    statements = [
        'CREATE TABLE employees ("EmployeeId" INT PRIMARY KEY,'
        ' "ReportsTo" INT REFERENCES employees ("EmployeeId"), name VARCHAR(10))',
        'CREATE INDEX employees_reports_to ON employees ("ReportsTo")',
        'CREATE TABLE invoices (id INT PRIMARY KEY, "SupportRepId" INT NOT NULL'
        ' REFERENCES employees ("EmployeeId"))',
        'CREATE INDEX invoices_rep ON invoices ("SupportRepId")',
    ]
    if db.backend == "mysql":  # (the names as Chinook spells them, quoted the MySQL way)
        statements = [s.replace('"', "`") for s in statements]
    db.run(
        *statements,
        "INSERT INTO employees VALUES (1, NULL, 'a'), (2, 1, 'b'), (3, 2, 'c'), (5, 1, 'e')",
        *employees,
        "INSERT INTO invoices VALUES (10, 2), (11, 3), (13, 5)",
    )


@pytest.mark.parametrize("db", ENGINES, indirect=True)
@pytest.mark.parametrize("batch_size", [1, 1000])
def test_a_row_matching_in_any_subject_column_is_the_subjects(
    db: TargetDB, batch_size: int
) -> None:
    """Employee 3 holds 3 in EmployeeId and 2 in ReportsTo: it was refused as
    another subject's row referencing the subject's."""
    _staff(db)
    plan = build_plan(reflect(db.engine), COLUMNS)
    assert dry_run(db.engine, plan, 2).total_rows == 4
    report = erase(db.engine, plan, 2, ExecutionOptions(batch_size=batch_size))
    assert report.verified
    assert report.total_rows == 4
    assert rows(db, "employees") == [(1, None, "a"), (5, 1, "e")]
    assert rows(db, "invoices") == [(13, 5)]


@pytest.mark.parametrize("db", ENGINES, indirect=True)
def test_another_subjects_row_referencing_a_matched_row_is_refused(db: TargetDB) -> None:
    """Employee 4 (another subject by EmployeeId, and not matched by ReportsTo, which
    holds 3) reports to employee 3, who goes: refused before anything is written."""
    _staff(db, "INSERT INTO employees VALUES (4, 3, 'd')")
    plan = build_plan(reflect(db.engine), COLUMNS)
    before = dump(db, "employees", "invoices")
    for entry_point in (dry_run, erase):
        with pytest.raises(CrossSubjectReference, match="1 row"):
            entry_point(db.engine, plan, 2)
    assert dump(db, "employees", "invoices") == before
