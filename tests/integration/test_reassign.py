"""The ``reassign`` policy: rows that reference the subject's rows stay, their
reference moved to a placeholder row (an erased salesperson's orders go to a
placeholder employee), on every database."""

from __future__ import annotations

import pytest

from models.erasure import TableAction, TablePolicy
from tests.conftest import TargetDB
from tests.integration.outcomes import dump, rows
from worker.catalog.reflection import reflect
from worker.exceptions import PolicyConflict
from worker.execution.erasure import dry_run, erase
from worker.execution.options import ExecutionOptions
from worker.planning.building import build_plan

ENGINES = ["sqlite", "postgresql", "mysql"]


def _shop(db: TargetDB) -> None:
    """Employee 0 is the placeholder; employee 2 (the subject) sold orders 10 and 11
    and wrote note 5; employee 3 sold order 12."""
    db.run(
        "CREATE TABLE employees (id INT PRIMARY KEY, name VARCHAR(20))",
        "CREATE TABLE orders (id INT PRIMARY KEY,"
        " salesperson_id INT NOT NULL REFERENCES employees (id), total INT)",
        "CREATE INDEX orders_salesperson ON orders (salesperson_id)",
        "CREATE TABLE notes (id INT PRIMARY KEY,"
        " employee_id INT NOT NULL REFERENCES employees (id), body VARCHAR(20))",
        "CREATE INDEX notes_employee ON notes (employee_id)",
        "INSERT INTO employees VALUES (0, 'placeholder'), (2, 'ann'), (3, 'bob')",
        "INSERT INTO orders VALUES (10, 2, 5), (11, 2, 6), (12, 3, 7)",
        "INSERT INTO notes VALUES (5, 2, 'x'), (6, 3, 'y')",
    )


def _policies(placeholder: object) -> dict[str, TablePolicy]:
    return {"orders": TablePolicy(action=TableAction.REASSIGN, reassign_to=placeholder)}


@pytest.mark.parametrize("db", ENGINES, indirect=True)
@pytest.mark.parametrize("batch_size", [1, 1000])
def test_orders_of_an_erased_salesperson_move_to_the_placeholder(
    db: TargetDB, batch_size: int
) -> None:
    _shop(db)
    plan = build_plan(reflect(db.engine), ["employees.id"], _policies(0))
    step = next(s for s in plan.steps if s.action is TableAction.REASSIGN)
    assert step.predicate.startswith("(salesperson_id) -> ")
    assert step.predicate.endswith("employees(id) = 0")
    assert ": set to the placeholder " in step.predicate
    counted = dry_run(db.engine, plan, 2)
    by_table = {(t.table.rsplit(".", 1)[-1], t.action): t.rows for t in counted.tables}
    assert by_table[("orders", TableAction.REASSIGN)] == 2
    assert by_table[("employees", TableAction.DELETE)] == 1
    assert by_table[("notes", TableAction.DELETE)] == 1
    assert counted.total_rows == 2
    report = erase(db.engine, plan, 2, ExecutionOptions(batch_size=batch_size))
    assert report.verified
    assert report.total_rows == 2
    assert [(t.table.rsplit(".", 1)[-1], t.action, t.rows) for t in report.tables] == [
        (t, a, n) for (t, a), n in by_table.items()
    ]
    assert rows(db, "orders") == [(10, 0, 5), (11, 0, 6), (12, 3, 7)]
    assert rows(db, "employees") == [(0, "placeholder"), (3, "bob")]
    assert rows(db, "notes") == [(6, 3, "y")]


@pytest.mark.parametrize("db", ENGINES, indirect=True)
@pytest.mark.parametrize(
    ("placeholder", "why"), [(99, "does not exist"), (2, "is the subject's own")]
)
def test_a_placeholder_that_is_missing_or_the_subjects_is_refused_before_any_write(
    db: TargetDB, placeholder: int, why: str
) -> None:
    _shop(db)
    plan = build_plan(reflect(db.engine), ["employees.id"], _policies(placeholder))
    before = dump(db, "employees", "orders", "notes")
    for entry_point in (dry_run, erase):
        with pytest.raises(PolicyConflict, match=why):
            entry_point(db.engine, plan, 2)
    assert dump(db, "employees", "orders", "notes") == before


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_reassign_is_refused_where_one_placeholder_cannot_serve(db: TargetDB) -> None:
    """A reassign table holding the subject column, or referencing removed rows of two
    tables, or without its placeholder key: refused when the plan is made."""
    _shop(db)
    db.run(
        "CREATE TABLE visits (id INT PRIMARY KEY, employee_id INT REFERENCES employees (id),"
        " note_id INT REFERENCES notes (id))"
    )
    catalog = reflect(db.engine)
    policy = TablePolicy(action=TableAction.REASSIGN, reassign_to=0)
    with pytest.raises(PolicyConflict, match="holds the subject column"):
        build_plan(catalog, ["id"], {"orders": policy})
    with pytest.raises(PolicyConflict, match="into one table"):
        build_plan(catalog, ["employees.id"], {"visits": policy})
    with pytest.raises(PolicyConflict, match="'reassign' goes with 'reassign_to'"):
        build_plan(catalog, ["employees.id"], {"orders": TablePolicy(action=TableAction.REASSIGN)})


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_reassign_on_the_command_line_and_in_the_plan_tree(db: TargetDB) -> None:
    from rich.console import Console  # noqa: PLC0415 - the CLI's own dependency

    from api.cli import parse_policy  # noqa: PLC0415
    from api.cli.tree import render_plan  # noqa: PLC0415

    assert parse_policy("orders=reassign:0") == ("orders", _policies(0)["orders"])
    _shop(db)
    plan = build_plan(reflect(db.engine), ["employees.id"], _policies(0))
    console = Console(width=200, record=True, color_system=None)
    console.print(render_plan(plan, dry_run(db.engine, plan, 2)))
    text = console.export_text()
    assert "main.orders  2 rows  reassign salesperson_id  (policy: to 0; the rows stay)" in text


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_set_default_reference_of_a_reassigned_table_stays_the_databases(
    db: TargetDB,
) -> None:
    """Order 10 also names note 5, which goes, through ON DELETE SET DEFAULT: the
    database resets that reference; only salesperson_id is moved, and the
    placeholder is looked for among employees alone."""
    _shop(db)
    db.run(
        "ALTER TABLE orders ADD COLUMN note_id INT DEFAULT NULL"
        " REFERENCES notes (id) ON DELETE SET DEFAULT",
        "UPDATE orders SET note_id = 5 WHERE id = 10",
    )
    plan = build_plan(reflect(db.engine), ["employees.id"], _policies(0))
    report = erase(db.engine, plan, 2)
    assert report.verified
    assert rows(db, "orders") == [(10, 0, 5, None), (11, 0, 6, None), (12, 3, 7, None)]
