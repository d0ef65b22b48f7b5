"""``/v1/services``: the registry as the API shows it (never a DSN)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from api.dependencies import AppRegistry, Limits, Reader
from api.rate_limits import Limit
from models.registry import Registry, Service

router = APIRouter(prefix="/v1/services", tags=["registry"])


class ServiceView(BaseModel):
    name: str
    #: ``sql``, ``redis`` or ``s3``: what kind of store the service is.
    kind: str
    subjects: list[str]
    queue: str | None
    batch_size: int
    lock_timeout_ms: int
    policies: dict[str, str]
    plan: dict[str, Any] | None = None
    plan_error: str | None = None


def planning_is_expensive(key: Reader, limits: Limits, plans: bool = False) -> None:
    """A dependency: ``plans=true`` counts against the key's expensive-call limit."""
    if plans:
        limits.hit(Limit.EXPENSIVE, key.id)


@router.get("", response_model=list[ServiceView], dependencies=[Depends(planning_is_expensive)])
def services(_key: Reader, registry: AppRegistry, plans: bool = False) -> list[ServiceView]:
    """The registry (never a DSN); ``plans=true`` adds each service's plan summary
    for every subject kind it holds (this connects to the databases, and counts
    against the key's expensive-call rate limit: ``429`` past it)."""
    out = []
    for name, service in sorted(registry.services.items()):
        sql = service if isinstance(service, Service) else None
        view = ServiceView(
            name=name,
            kind=service.kind,
            subjects=registry.kinds_for(name),
            queue=service.queue,
            batch_size=service.batch_size,
            # Lock timeouts and table policies are a SQL database's; a cache or a
            # bucket has neither (and no plan to summarise).
            lock_timeout_ms=sql.lock_timeout_ms if sql else 0,
            policies={t: p.action.value for t, p in sql.tables.items()} if sql else {},
        )
        if plans and sql is not None:
            view.plan, view.plan_error = plan_summary(registry, name)
        out.append(view)
    return out


def plan_summary(registry: Registry, name: str) -> tuple[dict[str, Any] | None, str | None]:
    """Per subject kind the service holds: its plan's size, cycles, warnings and schema
    fingerprint; or, when the database cannot be planned, why (classified, no DSN)."""
    from tasks.resources import resources  # noqa: PLC0415 - engines live with the worker's
    from worker.faults import classify  # noqa: PLC0415
    from worker.service import plan_service  # noqa: PLC0415

    summary: dict[str, Any] = {}
    try:
        engine = resources().engine_for(name)
        for kind in registry.kinds_for(name):
            plan = plan_service(
                engine, registry.sql_service(name), registry.subject_columns(name, kind)
            )
            summary[kind] = {
                "tables": len(plan.steps),
                "cycles": [" -> ".join(c.path) for c in plan.cycles],
                "warnings": len(plan.warnings),
                "schema_fingerprint": plan.fingerprint,
            }
    except Exception as exc:
        return None, classify(exc).description
    return summary, None
