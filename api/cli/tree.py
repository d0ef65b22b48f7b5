"""``eraser plan`` as people read it: a Rich tree per root table, children under the
parents they reference, each node marked with its action, cycles with their strategy,
and (given a subject) the exact count of the subject's rows per node.

A root is a table of the plan that no other table of the plan leads to. When the
anchors' subject column references a table that is not in the plan (``tenants`` for
``--subject-column tenant_id``), that table is drawn as the root, marked kept, with the
option that would erase it too: it is never left out silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.text import Text
from rich.tree import Tree

from api.cli.display import ACTION_STYLE

if TYPE_CHECKING:
    from models.erasure import ErasureReport
    from worker.catalog.model import ForeignKey, TableName
    from worker.planning.model import Cycle, Plan

_SELF = "↻"
_ANCHOR = "⚓"


class _Drawing:
    def __init__(self, plan: Plan, counts: ErasureReport | None) -> None:
        self.plan = plan
        self.counts = (
            None if counts is None else {(t.table, t.action.value): t.rows for t in counts.tables}
        )
        self.drawn: set[TableName] = set()
        self.cycles_shown: set[tuple[str, ...]] = set()

    # -- labels -----------------------------------------------------------------------
    def _count(self, table: TableName, action: str) -> Text:
        if self.counts is None:
            return Text()
        rows = self.counts.get((str(table), action), 0)
        if not rows:
            return Text("  no rows", style="dim")
        return Text.assemble("  ", (f"{rows:,}", "bold"), " row" if rows == 1 else " rows")

    def _action(self, table: TableName) -> Text:
        action = self.plan.actions[table].value
        words = {
            "delete_if_orphaned": "delete if orphaned (when the subject held its last link)",
            "unlink": "unlink (only the subject's links)",
        }
        label = words.get(action, action)
        policy = self.plan.policies.get(table)
        if action == "anonymize" and policy is not None:
            label += " " + ", ".join(f"{c}={v!r}" for c, v in sorted(policy.set.items()))
        return Text(label, style=ACTION_STYLE.get(action, "bold"))

    def label(self, table: TableName, via: ForeignKey | None) -> Text:
        text = Text.assemble((str(table), "bold"))
        text.append_text(self._count(table, self.plan.actions[table].value))
        text.append_text(Text.assemble("  ", self._action(table)))
        anchor = self.plan.anchors.get(table)
        if anchor:
            text.append(f"  {_ANCHOR} {', '.join(anchor)} = subject", style="blue")
        elif via is not None:
            text.append(f"  via {', '.join(via.child_columns)}", style="dim")
        cycle = self.plan.cycle_of.get(table)
        if cycle is not None:
            text.append_text(_cycle_mark(cycle, first=cycle.path not in self.cycles_shown))
            self.cycles_shown.add(cycle.path)
        return text

    # -- the tree ---------------------------------------------------------------------
    def grow(self, node: Tree, table: TableName) -> None:
        """Draw ``table``'s children under ``node`` (each table expanded once)."""
        self.drawn.add(table)
        for edge in self.plan.children.get(table, []):
            fk = edge.fk
            if edge.mode.value != "delete":
                self._cleared(node, fk, edge.mode.value)
            elif fk.child == table:
                continue  # a self-reference: marked on the node itself
            elif fk.child in self.drawn:
                node.add(
                    Text.assemble(
                        (str(fk.child), "bold"),
                        (f"  via {', '.join(fk.child_columns)}, shown above", "dim"),
                    )
                )
            else:
                self.grow(node.add(self.label(fk.child, fk)), fk.child)
        for fk in self.plan.catalog.incoming(table):
            policy = self.plan.policies.get(fk.child)
            if policy is not None and policy.action.value == "keep" and fk.child != table:
                node.add(
                    Text.assemble(
                        (str(fk.child), "bold"),
                        ("  keep", ACTION_STYLE["keep"]),
                        (f"  (policy; references it via {', '.join(fk.child_columns)})", "dim"),
                    )
                )

    def _cleared(self, node: Tree, fk: ForeignKey, mode: str) -> None:
        cols = ", ".join(fk.child_columns)
        if mode == "nullify":
            count = self._count(fk.child, "nullify")
            if self.counts is not None and not self.counts.get((str(fk.child), "nullify")):
                return  # no reference of the subject's rows to clear: no line
            node.add(
                Text.assemble(
                    (str(fk.child), "bold"),
                    count,
                    ("  nullify ", ACTION_STYLE["nullify"]),
                    (cols, "cyan"),
                    ("  (ON DELETE SET NULL: the rows stay)", "dim"),
                )
            )
        elif mode == "reassign":
            node.add(
                Text.assemble(
                    (str(fk.child), "bold"),
                    self._count(fk.child, "reassign"),
                    ("  reassign ", ACTION_STYLE["reassign"]),
                    (cols, "cyan"),
                    (f"  (policy: to {self.plan.placeholder(fk.child)!r}; the rows stay)", "dim"),
                )
            )
        elif self.counts is None:
            node.add(
                Text.assemble(
                    (str(fk.child), "bold"),
                    (f"  {cols} reset by the database (ON DELETE SET DEFAULT)", "dim"),
                )
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

    def forest(self) -> list[Tree]:
        trees: list[Tree] = []
        outside: dict[TableName, Tree] = {}
        for table in self.roots():
            if table in self.drawn:
                continue
            parent = self.referenced_root(table)
            if parent is None:
                tree = Tree(self.label(table, None), guide_style="dim")
                trees.append(tree)
                self.grow(tree, table)
                continue
            if parent not in outside:
                col = _referenced_columns(self.plan, table, parent)
                outside[parent] = Tree(
                    Text.assemble(
                        (str(parent), "bold"),
                        ("  keep", ACTION_STYLE["keep"]),
                        (
                            "  (not a subject column: add --subject-column "
                            f"{parent.name}.{col} to erase its row too)",
                            "dim",
                        ),
                    ),
                    guide_style="dim",
                )
                trees.append(outside[parent])
            self.grow(outside[parent].add(self.label(table, None)), table)
        return trees


def _referenced_columns(plan: Plan, table: TableName, parent: TableName) -> str:
    for fk in plan.catalog.tables[table].foreign_keys:
        if fk.parent == parent:
            return ", ".join(fk.parent_columns)
    return "id"


def _cycle_mark(cycle: Cycle, first: bool) -> Text:
    """The cycle a table is in; its strategy is told on the first of its tables only."""
    if len(cycle.tables) == 1:
        return Text(f"  {_SELF} self-reference: {cycle.strategy.value}", style="yellow")
    if not first:
        return Text(f"  {_SELF} in the cycle above", style="yellow")
    path = " → ".join(cycle.path)
    return Text(f"  {_SELF} cycle {path}, broken by: {cycle.strategy.value}", style="yellow")


def _legend(plan: Plan, counts: ErasureReport | None) -> Iterable[RenderableType]:
    if counts is not None:
        removed = counts.total_rows
        cleared = sum(t.rows for t in counts.tables if t.action.value == "nullify")
        yield Text.assemble(
            ("Dry run: ", "bold"),
            (f"{removed:,}", "bold"),
            " row(s) of the subject would be removed",
            f", {cleared:,} reference(s) cleared" if cleared else "",
            " (nothing written).",
        )
    for warning in plan.warnings:
        yield Text(f"warning: {warning}", style="yellow")
    yield Text(
        f"{_ANCHOR} anchor: rows read by the subject column; the others through the "
        "references shown. Children are erased before their parents.",
        style="dim",
    )


def render_plan(plan: Plan, counts: ErasureReport | None = None) -> RenderableType:
    """The plan as a forest of Rich trees, with the counts of a dry run when given."""
    title = Text.assemble(
        ("Plan", "bold"),
        f" ({plan.catalog.dialect}, schema {plan.fingerprint[:19]}, subject column ",
        (", ".join(plan.subject_columns), "blue"),
        ")",
    )
    drawing = _Drawing(plan, counts)
    return Group(title, *drawing.forest(), *_legend(plan, counts))
