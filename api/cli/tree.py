"""``eraser plan`` as people read it: a Rich tree per root table, children under the
parents they reference, each node marked with its action, cycles with their strategy,
and (given a subject) the exact count of the subject's rows per node. The forest
itself is ``api.plan_tree``'s (the console draws the same one).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.text import Text
from rich.tree import Tree

from api.cli.display import ACTION_STYLE
from api.plan_tree import CycleMark, NodeKind, PlanNode, plan_forest

if TYPE_CHECKING:
    from models.erasure import ErasureReport
    from worker.planning.model import Plan

_SELF = "↻"
_ANCHOR = "⚓"
_WORDS = {
    "delete_if_orphaned": "delete if orphaned (when the subject held its last link)",
    "unlink": "unlink (only the subject's links)",
}


def _count(rows: int | None) -> Text:
    if rows is None:
        return Text()
    if not rows:
        return Text("  no rows", style="dim")
    return Text.assemble("  ", (f"{rows:,}", "bold"), " row" if rows == 1 else " rows")


def _cleared_label(node: PlanNode) -> Text:
    """A node whose rows stay, their reference to the parent cleared or moved."""
    via = ", ".join(node.via)
    why = (
        "  (ON DELETE SET NULL: the rows stay)"
        if node.kind is NodeKind.NULLIFY
        else f"  (policy: {node.detail}; the rows stay)"
    )
    return Text.assemble(
        (node.table, "bold"),
        _count(node.rows),
        (f"  {node.action} ", ACTION_STYLE[node.action]),
        (via, "cyan"),
        (why, "dim"),
    )


def _other_label(node: PlanNode) -> Text | None:
    """A node that is not one of the plan's own tables, or None."""
    name = (node.table, "bold")
    via = ", ".join(node.via)
    if node.kind is NodeKind.SEEN:
        return Text.assemble(name, (f"  via {via}, shown above", "dim"))
    if node.kind is NodeKind.KEPT_BY_POLICY:
        return Text.assemble(
            name, ("  keep", ACTION_STYLE["keep"]), (f"  (policy; references it via {via})", "dim")
        )
    if node.kind in (NodeKind.NULLIFY, NodeKind.REASSIGN):
        return _cleared_label(node)
    if node.kind is NodeKind.SET_DEFAULT:
        return Text.assemble(
            name, (f"  {via} reset by the database (ON DELETE SET DEFAULT)", "dim")
        )
    if node.kind is NodeKind.OUTSIDE:
        return Text.assemble(
            name,
            ("  keep", ACTION_STYLE["keep"]),
            (
                "  (not a subject column: add --subject-column "
                f"{node.subject_column_hint} to erase its row too)",
                "dim",
            ),
        )
    return None


def _label(node: PlanNode) -> Text:
    """One node's line (the tree's shape is ``api.plan_tree``'s, shared with the console)."""
    other = _other_label(node)
    if other is not None:
        return other
    label = _WORDS.get(node.action, node.action)
    if node.detail:
        label += " " + node.detail
    text = Text.assemble((node.table, "bold"), _count(node.rows), "  ")
    text.append(label, style=ACTION_STYLE.get(node.action, "bold"))
    if node.anchor:
        text.append(f"  {_ANCHOR} {', '.join(node.anchor)} = subject", style="blue")
    elif node.via:
        text.append(f"  via {', '.join(node.via)}", style="dim")
    if node.cycle is not None:
        text.append_text(_cycle_mark(node.cycle))
    return text


def _grow(tree: Tree, node: PlanNode) -> Tree:
    for child in node.children:
        _grow(tree.add(_label(child)), child)
    return tree


def _cycle_mark(cycle: CycleMark) -> Text:
    """The cycle a table is in; its strategy is told on the first of its tables only."""
    if cycle.self_reference:
        return Text(f"  {_SELF} self-reference: {cycle.strategy}", style="yellow")
    if not cycle.first:
        return Text(f"  {_SELF} in the cycle above", style="yellow")
    path = " → ".join(cycle.path)
    return Text(f"  {_SELF} cycle {path}, broken by: {cycle.strategy}", style="yellow")


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
    by_table = (
        None if counts is None else {(t.table, t.action.value): t.rows for t in counts.tables}
    )
    trees = [
        _grow(Tree(_label(root), guide_style="dim"), root) for root in plan_forest(plan, by_table)
    ]
    return Group(title, *trees, *_legend(plan, counts))
