"""What every part of one erasure's walk shares: the connection, the plan and its
predicates, the options, the database's dialect, and how each table's rows are named."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from models.erasure import TableAction
from worker.catalog.model import NO_ACTION, RESTRICT, TableName
from worker.dialects.base import Dialect
from worker.dialects.rows import RowIdentity
from worker.exceptions import UnsupportedTable
from worker.execution.options import ExecutionOptions
from worker.planning.model import REMOVING, Edge, EdgeMode, Plan
from worker.planning.predicates import Predicates


@dataclass
class WalkContext:
    """Shared by the walk and its collaborators. ``conn`` is the connection statements
    go to right now (a held batch switches it for a while)."""

    conn: Connection
    plan: Plan
    preds: Predicates
    opts: ExecutionOptions
    dialect: Dialect
    #: How each touched table's rows are named.
    rid: dict[TableName, RowIdentity] = field(default_factory=dict)
    #: The columns each touched table's rows are read with (those references need).
    needed: dict[TableName, list[str]] = field(default_factory=dict)
    #: Anchor tables whose walk has finished in this pass.
    done: set[TableName] = field(default_factory=set)

    @classmethod
    def start(
        cls, conn: Connection, plan: Plan, subject: object, options: ExecutionOptions
    ) -> WalkContext:
        """The context of an erasure of ``subject``; ``UnsupportedTable`` for a table
        whose rows cannot be named one batch at a time."""
        ctx = cls(conn, plan, Predicates(plan, subject), options, plan.dialect)
        # Only tables the erasure touches: an unrelated table the engine could not
        # address (a partitioned table without a key) must not stop the erasure.
        touched = [*plan.actions, *plan.nullified]
        ctx.rid = {t: ctx.dialect.row_identity(plan.info(t)) for t in touched}
        for table in touched:
            if ctx.rid[table].kind == "none" and not ctx.is_leaf(table):
                # Its rows cannot be taken one batch at a time with the rows referencing
                # them: the references would be left to the database, unseen.
                raise UnsupportedTable(
                    str(table),
                    "other tables reference it, and it has no primary key or NOT NULL"
                    " unique key to address its rows by",
                )
        ctx.needed = {t: ctx._needed_columns(t) for t in touched}
        return ctx

    def _needed_columns(self, table: TableName) -> list[str]:
        cols: list[str] = []
        for edge in self.plan.children.get(table, []):
            cols += edge.fk.parent_columns
            if edge.fk.is_self_reference:
                cols += edge.fk.child_columns
        if self.dialect.blocks_self_pointing_rows:
            # Self-pointing rows are set apart by reading both sides, edge or not (a
            # shared table's parent reference is no edge of the walk).
            for fk in self.plan.info(table).foreign_keys:
                if fk.is_self_reference:
                    cols += [*fk.parent_columns, *fk.child_columns]
        return list(dict.fromkeys(cols))

    def table(self, name: TableName) -> sa.Table:
        return self.plan.info(name).table

    def is_leaf(self, table: TableName) -> bool:
        """Whether no reference into ``table``'s rows needs the walk's attention."""
        if table in self.plan.cycle_of:
            return False
        removing = self.plan.actions.get(table) in REMOVING
        return not any(
            e.mode is EdgeMode.DELETE or removing for e in self.plan.children.get(table, [])
        )

    def already_cleared(self, edge: Edge) -> bool:
        """Whether the rows behind ``edge`` are almost surely gone: the child is an anchor
        whose walk finished in this pass. Its rows are then not looked up again for each
        parent batch (that lookup costs as much as the delete); should one remain (a
        NULL subject column, a late writer), the database refuses the parent's delete
        with a foreign-key violation, nothing is written, and the batch is retried with
        every reference cleared. Only for references the database enforces at once."""
        fk = edge.fk
        return (
            edge.mode is EdgeMode.DELETE
            # An anonymized parent is updated, not deleted: no check would catch a row
            # left behind (a NULL subject column), so its references are looked up.
            and self.plan.actions.get(fk.parent) is not TableAction.ANONYMIZE
            and fk.child in self.done
            and fk.on_delete in (NO_ACTION, RESTRICT)
            and not fk.deferrable
            and not (fk.name or "").startswith("virtual:")
            and fk.child not in self.plan.cycle_of
        )
