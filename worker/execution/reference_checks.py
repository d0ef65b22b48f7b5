"""Which tables' batches Eraser removes with the database's reference checks off,
checking the references itself (``fk_checks = "eraser"``, PostgreSQL).

Why that is safe (the lock argument) and what it saves are in
docs/design/engine-notes.md, "Eraser's own reference checks".
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Connection

from models.erasure import TableAction
from worker.catalog.model import SET_DEFAULT, SET_NULL, ForeignKey, TableName
from worker.exceptions import ReferenceChecksUnavailable
from worker.planning.model import REMOVING, Plan


@dataclass(frozen=True)
class Shortcut:
    """How a batch of one parent table is removed with the database's per-row
    foreign-key triggers off for that one transaction: the DELETE locks the batch's
    rows, then every declared reference into them is swept (removed with them,
    recursively), cleared (``SET NULL``) or probed (none may remain), set-wise, in the
    same transaction. A probe that finds a row, or a swept row of another subject, rolls
    the batch back and it goes the database's way. Only for tables, and children,
    without triggers of their own and outside cycles and partitioned tables."""

    #: Children removed with their parent (and their own children with them).
    sweep: tuple[ForeignKey, ...]
    #: ``ON DELETE SET NULL`` references, cleared as the database would.
    clear: tuple[ForeignKey, ...]
    #: Every other declared reference: none may remain.
    probe: tuple[ForeignKey, ...]

    @property
    def referenced(self) -> list[str]:
        cols = [c for fk in (*self.sweep, *self.clear, *self.probe) for c in fk.parent_columns]
        return list(dict.fromkeys(cols))


def shortcuts(conn: Connection, plan: Plan, mode: str) -> dict[TableName, Shortcut]:
    """The tables whose batches may be removed with Eraser checking the references
    (``mode`` is ``fk_checks``; "eraser" refused where the role may not have it)."""
    dialect = plan.dialect
    if mode == "database":
        return {}
    refusal = dialect.reference_checks_refusal(conn)
    if refusal is not None:
        if mode == "eraser":
            raise ReferenceChecksUnavailable(refusal)
        return {}
    declared = dialect.referencing_constraints(conn)
    unsafe = dialect.checks_off_unsafe(conn)
    found: dict[TableName, Shortcut] = {}
    for table in plan.order:  # children first: a child's shortcut is known before
        shortcut = _shortcut(plan, table, declared, found, unsafe)
        if shortcut is not None:
            found[table] = shortcut
    return found


def _plain_table(plan: Plan, table: TableName, unsafe: set[tuple[str, str]]) -> bool:
    info = plan.info(table)
    return (
        not info.triggers
        and not info.partitioned
        and table not in plan.cycle_of
        and (table.schema, table.name) not in unsafe
    )


def _shortcut(
    plan: Plan,
    table: TableName,
    declared: dict[tuple[str, str], int],
    found: dict[TableName, Shortcut],
    unsafe: set[tuple[str, str]],
) -> Shortcut | None:
    if plan.actions[table] not in (TableAction.DELETE, TableAction.UNLINK):
        return None
    if not _plain_table(plan, table, unsafe):
        return None
    incoming = plan.catalog.incoming(table)
    real = [fk for fk in incoming if not is_virtual(fk)]
    if len(real) != declared.get((table.schema, table.name), 0):
        return None  # a reference from a schema the catalog did not read
    sweep: list[ForeignKey] = []
    clear: list[ForeignKey] = []
    probe: list[ForeignKey] = []
    for fk in real:
        child = fk.child
        if (
            fk.is_self_reference
            or fk.on_delete == SET_DEFAULT
            or child in plan.reassigned
            or not _plain_table(plan, child, unsafe)
        ):
            return None
        if fk.on_delete == SET_NULL:
            if plan.actions.get(child) in REMOVING:
                # The subject's own rows may be behind it: a clear in a batch (nested under
                # a swept child, too) would strip them of the reference and leave them.
                return None
            referenced = {c for ref in plan.catalog.incoming(child) for c in ref.parent_columns}
            if set(fk.clearable) != set(fk.child_columns) or referenced & set(fk.child_columns):
                return None
            clear.append(fk)
        elif child in found and not any(is_virtual(f) for f in plan.catalog.incoming(child)):
            # Removed with the parent, and the rows referencing it with it, recursively.
            sweep.append(fk)
        else:
            probe.append(fk)
    return Shortcut(tuple(sweep), tuple(clear), tuple(probe))


def is_virtual(fk: ForeignKey) -> bool:
    return (fk.name or "").startswith("virtual:")
