"""``/v1/services``: the registry as the API shows it (never a DSN)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from api.dependencies import AppRegistry, Reader
from models.registry import Registry

router = APIRouter(prefix="/v1/services", tags=["registry"])


class ServiceView(BaseModel):
    name: str
    subjects: list[str]
    queue: str | None
    batch_size: int
    lock_timeout_ms: int
    policies: dict[str, str]
    plan: dict[str, Any] | None = None
    plan_error: str | None = None


@router.get("", response_model=list[ServiceView])
def services(_key: Reader, registry: AppRegistry, plans: bool = False) -> list[ServiceView]:
    """The registry (never a DSN); ``plans=true`` adds each service's plan summary
    for every subject kind it holds (this connects to the databases)."""
    out = []
    for name, service in sorted(registry.services.items()):
        view = ServiceView(
            name=name,
            subjects=registry.kinds_for(name),
            queue=service.queue,
            batch_size=service.batch_size,
            lock_timeout_ms=service.lock_timeout_ms,
            policies={t: p.action.value for t, p in service.tables.items()},
        )
        if plans:
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
                engine, registry.services[name], registry.subject_columns(name, kind)
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
