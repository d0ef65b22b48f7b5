"""The plan of an erasure per service, as the preview page shows it: the tree of
tables (``api.plan_tree``'s, the one ``eraser plan`` draws) with the dry run's
counts, what is done to each table, the cycles and how each is broken, the shared
entities the erasure unlinks rather than deletes, the order the engine empties the
tables, and the planner's warnings. Reading it reflects each service's schema (no
subject rows are read); a database that cannot be planned shows why, classified (no
DSN)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from api.plan_tree import Counts, PlanNode, SharedEntity, plan_forest, shared_entities
from models.registry import Registry, Service

if TYPE_CHECKING:
    from worker.planning.model import Plan

#: What an action does, in words; an action not named here shows by its name.
ACTION_WORDS = {
    "delete": "deleted",
    "keep": "kept",
    "anonymize": "anonymized (the rows stay, the listed columns are overwritten)",
    "unlink": "unlinked (only the subject's links are deleted)",
    "delete_if_orphaned": "deleted only where the subject held the last link",
    "nullify": "reference cleared (ON DELETE SET NULL: the rows stay)",
}


@dataclass(frozen=True)
class StepView:
    table: str
    action: str
    cycle: str | None


@dataclass(frozen=True)
class ActionTotal:
    """One action of a plan: how many tables get it and the rows it touches."""

    action: str
    words: str
    tables: int
    #: None when the plan was read without a dry run's counts.
    rows: int | None


@dataclass
class ServicePlan:
    service: str
    forest: list[PlanNode] = field(default_factory=list)
    steps: list[StepView] = field(default_factory=list)
    actions: list[ActionTotal] = field(default_factory=list)
    #: "a -> b -> a (strategy)" per cycle.
    cycles: list[str] = field(default_factory=list)
    shared: list[SharedEntity] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


def _totals(
    actions: Mapping[str, str], counts: Counts | None, nullified: Sequence[str]
) -> list[ActionTotal]:
    """Per action of the plan (whatever actions the planner knows), its tables and
    rows; references cleared by ``nullify`` count as an action of their own."""
    tables: dict[str, set[str]] = {}
    for table, action in actions.items():
        tables.setdefault(action, set()).add(table)
    if nullified:
        tables.setdefault("nullify", set()).update(nullified)
    out = []
    for action, names in sorted(tables.items()):
        rows = None if counts is None else sum(counts.get((t, action), 0) for t in names)
        words = ACTION_WORDS.get(action, action.replace("_", " "))
        out.append(ActionTotal(action, words, len(names), rows))
    return out


def plans_for(
    registry: Registry,
    kind: str,
    services: Sequence[str],
    counts: Mapping[str, Counts] | None = None,
) -> list[ServicePlan]:
    """The plan of erasing a ``kind`` from each of ``services``, with the dry run's
    ``counts`` per service (``(table, action) -> rows``) when given."""
    from tasks.resources import resources  # noqa: PLC0415 - engines live with the worker's
    from worker.faults import classify  # noqa: PLC0415
    from worker.service import plan_service  # noqa: PLC0415

    out = []
    for name in services:
        view = ServicePlan(name)
        definition = registry.services[name]
        if not isinstance(definition, Service):
            view.error = (
                f"a {definition.kind} service: its keys or objects are counted, not planned"
            )
            out.append(view)
            continue
        try:
            plan = plan_service(
                resources().engine_for(name),
                definition,
                registry.subject_columns(name, kind),
            )
        except Exception as exc:
            view.error = classify(exc).description
        else:
            view = service_plan(name, plan, None if counts is None else counts.get(name, {}))
        out.append(view)
    return out


def service_plan(service: str, plan: Plan, counts: Counts | None) -> ServicePlan:
    """What the preview shows of one service's plan, with its dry run's counts."""
    return ServicePlan(
        service,
        forest=plan_forest(plan, counts),
        steps=[StepView(str(s.table), s.action.value, s.cycle) for s in plan.steps],
        actions=_totals(
            {str(t): a.value for t, a in plan.actions.items()},
            counts,
            [str(t) for t in plan.nullified],
        ),
        cycles=[f"{' -> '.join(c.path)} ({c.strategy.value})" for c in plan.cycles],
        shared=shared_entities(plan, counts),
        warnings=list(plan.warnings),
    )
