"""Run the engine for one registered service: the plain function behind
``eraser.erase_service``, callable (and tested) without Celery."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from models.erasure import ErasureReport
from models.registry import Service
from worker.catalog import reflect
from worker.executor import ExecutionOptions, ProgressCallback, dry_run, erase
from worker.planner import Plan, build_plan


def plan_service(engine: sa.Engine, service: Service, subject_columns: Sequence[str]) -> Plan:
    """Reflect the service's live schema and plan the erasure of one subject kind."""
    catalog = reflect(engine, service.schemas or None)
    virtual = [(v.child, v.parent) for v in service.virtual_fks]
    return build_plan(catalog, subject_columns, service.policies(), virtual)


def run_service(
    engine: sa.Engine,
    name: str,
    service: Service,
    subject_kind: str,
    subject_columns: Sequence[str],
    subject: str,
    dry: bool,
    progress: ProgressCallback | None = None,
) -> ErasureReport:
    """Erase (or, when ``dry``, count) one subject in one service's database."""
    plan = plan_service(engine, service, subject_columns)
    if dry:
        return dry_run(engine, plan, subject)
    options = ExecutionOptions(
        batch_size=service.batch_size, lock_timeout_ms=service.lock_timeout_ms
    )
    return erase(engine, plan, subject, options, progress, lock_scope=(name, subject_kind))
