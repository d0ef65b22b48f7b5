"""A plan as a forest, for people: one tree per root table, children under the parents
they reference, each node with its action, its anchor or the reference it is reached
by, its cycle, and (given a dry run's counts) the subject's rows in it.

``eraser plan`` draws it with Rich (``api/cli/tree.py``) and the console as nested
lists (``api/console/plans.py``); both read the same nodes.

A root is a table of the plan that no other table of the plan leads to. When an
anchor's subject column references a table that is not in the plan (``tenants`` for
``--subject-column tenant_id``), that table is the root, marked kept, with the column
that would erase it too: it is never left out silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.catalog.model import ForeignKey, TableName
    from worker.planning.model import Cycle, Plan

#: (table, action) -> the subject's rows, as a dry run counted them.
Counts = Mapping[tuple[str, str], int]


class NodeKind(StrEnum):
    #: A table of the plan, with its action.
    TABLE = "table"
    #: A table of the plan already drawn elsewhere in the forest (a cycle, a diamond).
    SEEN = "seen"
    #: Rows that reference the parent through ``ON DELETE SET NULL``: cleared, kept.
    NULLIFY = "nullify"
    #: Rows whose reference to the parent a ``reassign`` policy moves to a placeholder.
    REASSIGN = "reassign"
    #: Rows that reference the parent through ``ON DELETE SET DEFAULT``.
    SET_DEFAULT = "set_default"
    #: A table a policy keeps, that references the parent.
    KEPT_BY_POLICY = "kept_by_policy"
    #: The table an anchor's subject column references, not in the plan: kept.
    OUTSIDE = "outside"


@dataclass(frozen=True)
class CycleMark:
    """The cycle a node is in; ``first`` on the first node of it the forest shows."""

    path: tuple[str, ...]
    strategy: str
    self_reference: bool
    first: bool


@dataclass
class PlanNode:
    table: str
    kind: NodeKind
    #: The table's action (``keep`` for a kept node, ``nullify`` for cleared references).
    action: str
    #: The subject's rows a dry run counted here; None without counts.
    rows: int | None = None
    #: The subject column(s), on an anchor.
    anchor: tuple[str, ...] = ()
    #: The referencing columns this node is reached by from its parent.
    via: tuple[str, ...] = ()
    cycle: CycleMark | None = None
    #: A policy's settings beyond its action (``anonymize``'s ``set``, ...), as text.
    detail: str = ""
    #: For an ``OUTSIDE`` root: the ``table.column`` that would erase its row too.
    subject_column_hint: str = ""
    children: list[PlanNode] = field(default_factory=list)

    @property
    def node_count(self) -> int:
        return 1 + sum(c.node_count for c in self.children)


def policy_detail(plan: Plan, table: TableName) -> str:
    """What a table's policy sets beyond its action, generically: ``anonymize``'s
    columns and values, and any other action's settings."""
    policy = plan.policies.get(table)
    if policy is None or policy.action.value != plan.actions[table].value:
        return ""
    extra = policy.model_dump(exclude_defaults=True, exclude={"action"})
    parts: list[str] = []
    for name, value in sorted(extra.items()):
        if isinstance(value, dict):
            parts.extend(f"{k}={v!r}" for k, v in sorted(value.items()))
        else:
            parts.append(f"{name}={value!r}")
    return ", ".join(parts)


class _Builder:
    def __init__(self, plan: Plan, counts: Counts | None) -> None:
        self.plan = plan
        self.counts = counts
        self.drawn: set[TableName] = set()
        self.cycles_shown: set[tuple[str, ...]] = set()

    def rows(self, table: TableName, action: str) -> int | None:
        return None if self.counts is None else self.counts.get((str(table), action), 0)

    def node(self, table: TableName, via: ForeignKey | None) -> PlanNode:
        action = self.plan.actions[table].value
        anchor = self.plan.anchors.get(table, ())
        made = PlanNode(
            str(table),
            NodeKind.TABLE,
            action,
            rows=self.rows(table, action),
            anchor=tuple(anchor),
            via=() if anchor or via is None else tuple(via.child_columns),
            detail=policy_detail(self.plan, table),
        )
        cycle = self.plan.cycle_of.get(table)
        if cycle is not None:
            made.cycle = self._mark(cycle)
        return made

    def _mark(self, cycle: Cycle) -> CycleMark:
        first = cycle.path not in self.cycles_shown
        self.cycles_shown.add(cycle.path)
        return CycleMark(cycle.path, cycle.strategy.value, len(cycle.tables) == 1, first)

    def grow(self, node: PlanNode, table: TableName) -> None:
        """Put ``table``'s children under ``node`` (each table expanded once)."""
        self.drawn.add(table)
        for edge in self.plan.children.get(table, []):
            fk = edge.fk
            if edge.mode.value != "delete":
                self._cleared(node, fk, edge.mode.value)
            elif fk.child == table:
                continue  # a self-reference: marked on the node itself
            elif fk.child in self.drawn:
                node.children.append(
                    PlanNode(
                        str(fk.child),
                        NodeKind.SEEN,
                        self.plan.actions[fk.child].value,
                        via=tuple(fk.child_columns),
                    )
                )
            else:
                child = self.node(fk.child, fk)
                node.children.append(child)
                self.grow(child, fk.child)
        for fk in self.plan.catalog.incoming(table):
            policy = self.plan.policies.get(fk.child)
            if policy is not None and policy.action.value == "keep" and fk.child != table:
                node.children.append(
                    PlanNode(
                        str(fk.child), NodeKind.KEPT_BY_POLICY, "keep", via=tuple(fk.child_columns)
                    )
                )

    def _cleared(self, node: PlanNode, fk: ForeignKey, mode: str) -> None:
        via = tuple(fk.child_columns)
        if mode == "nullify":
            rows = self.rows(fk.child, "nullify")
            if rows == 0:
                return  # no reference of the subject's rows to clear: no node
            node.children.append(
                PlanNode(str(fk.child), NodeKind.NULLIFY, "nullify", rows=rows, via=via)
            )
        elif mode == "reassign":
            node.children.append(
                PlanNode(
                    str(fk.child),
                    NodeKind.REASSIGN,
                    "reassign",
                    rows=self.rows(fk.child, "reassign"),
                    via=via,
                    detail=f"to {self.plan.placeholder(fk.child)!r}",
                )
            )
        elif self.counts is None:
            node.children.append(
                PlanNode(str(fk.child), NodeKind.SET_DEFAULT, "set_default", via=via)
            )

    def roots(self) -> list[TableName]:
        """Tables of the plan that no other table of the plan leads to, then any left
        (all of a cycle), anchors first."""
        led: set[TableName] = set()
        for parent, edges in self.plan.children.items():
            if parent in self.plan.actions:
                led.update(e.fk.child for e in edges if e.mode.value == "delete")
        led.difference_update(self.plan.orphan_links)  # shared tables: roots of their own
        tops = sorted(t for t in self.plan.actions if t not in led or self._self_only(t))
        rest = sorted(self.plan.actions, key=lambda t: (t not in self.plan.anchors, t))
        return tops + [t for t in rest if t not in tops]

    def _self_only(self, table: TableName) -> bool:
        """Led only by itself (a self-referencing table): still a root."""
        for parent, edges in self.plan.children.items():
            others = parent != table and parent in self.plan.actions
            if others and any(e.fk.child == table and e.mode.value == "delete" for e in edges):
                return False
        return True

    def referenced_root(self, table: TableName) -> TableName | None:
        """The table that an anchor's subject column references, when it is not in the
        plan (the subject's own table, ``tenants``)."""
        anchor = self.plan.anchors.get(table, ())
        for fk in self.plan.catalog.tables[table].foreign_keys:
            by_subject = bool(fk.child_columns) and set(fk.child_columns) <= set(anchor)
            if by_subject and fk.parent not in self.plan.actions and fk.parent != table:
                return fk.parent
        return None

    def forest(self) -> list[PlanNode]:
        trees: list[PlanNode] = []
        outside: dict[TableName, PlanNode] = {}
        for table in self.roots():
            if table in self.drawn:
                continue
            parent = self.referenced_root(table)
            node = self.node(table, None)
            if parent is None:
                trees.append(node)
            else:
                if parent not in outside:
                    col = _referenced_columns(self.plan, table, parent)
                    outside[parent] = PlanNode(
                        str(parent),
                        NodeKind.OUTSIDE,
                        "keep",
                        subject_column_hint=f"{parent.name}.{col}",
                    )
                    trees.append(outside[parent])
                outside[parent].children.append(node)
            self.grow(node, table)
        return trees


def _referenced_columns(plan: Plan, table: TableName, parent: TableName) -> str:
    for fk in plan.catalog.tables[table].foreign_keys:
        if fk.parent == parent:
            return ", ".join(fk.parent_columns)
    return "id"


def plan_forest(plan: Plan, counts: Counts | None = None) -> list[PlanNode]:
    """The plan as a forest of nodes, with a dry run's counts when given."""
    return _Builder(plan, counts).forest()


@dataclass(frozen=True)
class SharedEntity:
    """A shared table (``delete_if_orphaned``): its rows go only when the subject held
    their last link; the others stay, other subjects still use them."""

    table: str
    #: The link tables (``unlink``) through which the subject uses it, and their rows.
    links: tuple[tuple[str, int | None], ...]
    #: Rows of the shared table the subject alone used (deleted); None without counts.
    orphaned: int | None


def shared_entities(plan: Plan, counts: Counts | None = None) -> list[SharedEntity]:
    """The plan's shared tables, each with the links the erasure removes (unlinks) and
    the rows it deletes because nobody else links to them."""
    found = []
    for table, fks in sorted(plan.orphan_links.items()):
        links = []
        for fk in sorted({fk.child for fk in fks}):
            action = plan.actions[fk].value if fk in plan.actions else "unlink"
            rows = None if counts is None else counts.get((str(fk), action), 0)
            links.append((str(fk), rows))
        orphaned = None if counts is None else counts.get((str(table), "delete_if_orphaned"), 0)
        found.append(SharedEntity(str(table), tuple(links), orphaned))
    return found
