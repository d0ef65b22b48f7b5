"""Run the engine for one registered service: the plain function behind
``eraser.erase_service``, callable (and tested) without Celery."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import sqlalchemy as sa

from models.erasure import ErasureReport
from models.registry import Service
from worker.catalog.reflection import reflect
from worker.catalog.version import catalog_version, catalog_version_column
from worker.dialects import dialect_of
from worker.exceptions import ReferenceChecksUnavailable
from worker.execution.erasure import dry_run, erase
from worker.execution.ledger import Ledger
from worker.execution.options import ExecutionOptions, ProgressCallback
from worker.execution.verification import NothingCheck, nothing_to_erase
from worker.faults import FaultKind, classify
from worker.planning.building import build_plan
from worker.planning.model import Plan


def plan_service(engine: sa.Engine, service: Service, subject_columns: Sequence[str]) -> Plan:
    """Reflect the service's live schema and plan the erasure of one subject kind."""
    catalog = reflect(engine, service.schemas or None)
    virtual = [(v.child, v.parent) for v in service.virtual_fks]
    return build_plan(catalog, subject_columns, service.policies(), virtual)


@dataclass
class PlanCache:
    """Plans kept per (service, subject kind) until the schema they were made from
    changes. Reflecting on every task costs ~10 ms and, worse, makes new ``Table``
    objects each time, so SQLAlchemy's statement cache never hits and keeps every old
    catalog alive; one version query per task replaces it."""

    _entries: dict[tuple[str, str], tuple[list[str] | None, str, Plan]] = field(
        default_factory=dict
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)
    #: The quick check of each kept plan, with the schema's version in it.
    _checks: dict[tuple[str, str], tuple[Plan, NothingCheck]] = field(default_factory=dict)
    #: Services whose role may switch the database's reference checks off.
    _reference_checks: set[str] = field(default_factory=set)

    def may_check_references(self, name: str) -> bool:
        """Whether ``name``'s role was seen allowed to check references itself."""
        with self._lock:
            return name in self._reference_checks

    def confirm_reference_checks(self, name: str) -> None:
        with self._lock:
            self._reference_checks.add(name)

    def check(
        self, engine: sa.Engine, name: str, subject_kind: str, schemas: list[str] | None, plan: Plan
    ) -> NothingCheck:
        """``plan``'s quick check, built on first use and kept with the plan."""
        key = (name, subject_kind)
        with self._lock:
            kept = self._checks.get(key)
        if kept is not None and kept[0] is plan:
            return kept[1]
        token = catalog_version_column(dialect_of(engine), schemas)
        check = NothingCheck(plan, token, engine.dialect)
        with self._lock:
            self._checks[key] = (plan, check)
        return check

    def peek(self, name: str, subject_kind: str) -> tuple[list[str] | None, str, Plan] | None:
        """The kept (schemas, version, plan), not checked against the database."""
        with self._lock:
            return self._entries.get((name, subject_kind))

    def get(
        self,
        engine: sa.Engine,
        name: str,
        service: Service,
        subject_kind: str,
        subject_columns: Sequence[str],
    ) -> Plan:
        key = (name, subject_kind)
        dialect = dialect_of(engine)

        def current(schemas: list[str] | None) -> str:
            with engine.connect() as conn:
                return catalog_version(conn, dialect, schemas)

        entry = self.peek(name, subject_kind)
        if entry is not None and current(entry[0]) == entry[1]:
            return entry[2]
        schemas = list(service.schemas) or None
        # MySQL's default is the connection's database plus those its keys point into,
        # known only after reflecting.
        known = dialect.schemas_known_before_reflecting or schemas is not None
        before = current(schemas) if known else None
        plan = plan_service(engine, service, subject_columns)
        if not known:
            schemas = sorted({t.schema for t in plan.catalog.tables})
        after = current(schemas)
        if before is None or before == after:  # no DDL while reflecting
            with self._lock:
                self._entries[key] = (schemas, after, plan)
        return plan


def nothing_here(
    engine: sa.Engine,
    name: str,
    service: Service,
    subject_kind: str,
    subject_columns: Sequence[str],
    subject: str,
    plans: PlanCache,
    timeout_ms: int | None = None,
) -> ErasureReport | None:
    """The report of an erasure that finds nothing of the subject in this service
    (read-only, no lock), or None when there is something to erase. A service that
    asks for Eraser's own reference checks (``fk_checks = "eraser"``) is refused here
    as ``erase()`` refuses it (``ReferenceChecksUnavailable``), confirmed once per
    process. ``timeout_ms`` bounds each statement's lock wait and run time (a table
    locked by someone else then fails the check fast instead of holding it)."""
    if service.fk_checks == "eraser" and not plans.may_check_references(name):
        with engine.connect() as conn:
            refusal = dialect_of(engine).reference_checks_refusal(conn)
        if refusal is not None:
            raise ReferenceChecksUnavailable(refusal)
        plans.confirm_reference_checks(name)
    kept = plans.peek(name, subject_kind)
    if kept is not None:
        # The kept plan, checked against the schema's version in the same statement.
        schemas, version, plan = kept
        check = plans.check(engine, name, subject_kind, schemas, plan)
        try:
            report, seen = check.run(engine, subject, timeout_ms)
        except sa.exc.DBAPIError as exc:
            if classify(exc).kind is not FaultKind.PERMANENT:
                raise  # a lock or statement timeout, a lost connection: not the plan
            seen = None  # the kept plan names what the schema no longer has: plan again
        if seen is not None and str(seen) == version:
            return report
    plan = plans.get(engine, name, service, subject_kind, subject_columns)
    return nothing_to_erase(engine, plan, subject, timeout_ms=timeout_ms)[0]


def run_service(
    engine: sa.Engine,
    name: str,
    service: Service,
    subject_kind: str,
    subject_columns: Sequence[str],
    subject: str,
    dry: bool,
    progress: ProgressCallback | None = None,
    plans: PlanCache | None = None,
    *,
    deadline: float | None = None,
    lock_wait_seconds: float | None = None,
    ledger: Ledger | None = None,
) -> ErasureReport:
    """Erase (or, when ``dry``, count) one subject in one service's database. With
    ``plans``, a plan made for an unchanged schema is reused. With ``deadline`` (a
    ``time.monotonic()`` value) the erasure stops at the first batch boundary after it
    by raising ``SliceEnded``. With ``ledger`` (a task's execution) every batch also
    writes its counts into the target's ledger."""
    if plans is None:
        plan = plan_service(engine, service, subject_columns)
    else:
        plan = plans.get(engine, name, service, subject_kind, subject_columns)
    options = ExecutionOptions(
        batch_size=service.batch_size,
        lock_timeout_ms=service.lock_timeout_ms,
        deadline=deadline,
        fk_checks=service.fk_checks,
        server_batches=service.server_batches,
        compress_wal=service.compress_wal,
        partitions=service.partitions,
        ledger=ledger,
    )
    if dry:
        return dry_run(engine, plan, subject, options)
    if lock_wait_seconds is not None:
        options = replace(options, subject_lock_wait_seconds=lock_wait_seconds)
    return erase(engine, plan, subject, options, progress, lock_scope=(name, subject_kind))
