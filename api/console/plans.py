"""The plan of an erasure per service, as the preview page shows it: the tables in the
order the engine empties them (children before parents) with their action, the
cycles and how each is broken, and the planner's warnings. Reading it reflects each
service's schema (no subject rows are read); a database that cannot be planned shows
why, classified (no DSN)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from models.registry import Registry, Service


@dataclass(frozen=True)
class StepView:
    table: str
    action: str
    cycle: str | None


@dataclass
class ServicePlan:
    service: str
    steps: list[StepView] = field(default_factory=list)
    #: "a -> b -> a (strategy)" per cycle.
    cycles: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


def plans_for(registry: Registry, kind: str, services: Sequence[str]) -> list[ServicePlan]:
    """The plan of erasing a ``kind`` from each of ``services``."""
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
            view.steps = [StepView(str(s.table), s.action.value, s.cycle) for s in plan.steps]
            view.cycles = [f"{' -> '.join(c.path)} ({c.strategy.value})" for c in plan.cycles]
            view.warnings = list(plan.warnings)
        out.append(view)
    return out
