"""``eraser demo``: Eraser's whole job on the bakery estate, with no server.

Seeds the demo estate (``examples/bakery``: 12 service databases, SQLite files),
shows the plan for one tenant, then runs a dry-run job and an erasure job through the
real Celery chord (in-process broker, a worker thread: the embedded default), with a
line per service as it finishes. It prints the job record, per-service counts, the
evidence (counts, verification, schema fingerprints; never the data), and proves
that every other tenant's rows and the shared rows are byte-identical afterwards.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from examples.bakery import seed as bakery
from examples.bakery.schema import SERVICES, metadata_for
from examples.bakery.stores import STORE_SERVICES
from models import certificate, migrate
from models.keyring import keyring
from models.messages import ErasureRequest, JobView
from models.registry import Registry
from models.settings import Settings, get_settings
from models.store.database import JobStore
from models.store.tables import Job, JobStatus
from tasks.embedded import EmbeddedWorker, is_embedded
from tasks.resources import Resources, use_resources
from tasks.submit import request_dispatch, submit
from worker.database import create_engine
from worker.service import plan_service

#: The service whose plan is shown (it has the store/manager cycle).
SHOWN_SERVICE = "pos"
WIDTH = 78


class DemoRefused(Exception):
    """The demo cannot run in this environment."""


def run_demo(
    out: TextIO,
    workdir: Path | None = None,
    subject: int = 2,
    tenants: int = 5,
    scale: float = 1.0,
) -> bool:
    """Run the demo, writing to ``out``; True when everything checked out."""
    settings = get_settings()
    if not is_embedded(settings):
        raise DemoRefused(
            "eraser demo runs on the embedded default; unset ERASER_BROKER_URL "
            "(for a deployment, see `make up`)"
        )
    with tempfile.TemporaryDirectory(prefix="eraser-demo-") as tmp:
        where = workdir or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        return _run(out, where, settings, subject, tenants, scale)


def _run(  # noqa: PLR0915  the demo is one narrated sequence of steps, read top to bottom
    out: TextIO, where: Path, settings: Settings, subject: int, tenants: int, scale: float
) -> bool:
    def say(text: str = "") -> None:
        out.write(text + "\n")
        out.flush()

    urls = bakery.sqlite_urls(where)
    tables = sum(len(metadata_for(s).tables) for s in SERVICES)
    say(f"Eraser demo: the bakery estate, {len(SERVICES)} service databases, {tables} tables")
    say("Embedded mode: SQLite job store, in-process broker and worker thread; the")
    say("tasks, chord and engine are the ones a deployment runs.")
    say(f"Skipped: {_stores_line()}; no servers here (see make up).")
    say()

    started = time.monotonic()
    rows = bakery.seed(urls, tenants=tenants, scale=scale)
    say(
        f"1. Seeded {tenants} bakeries: {sum(rows.values()):,} rows "
        f"({time.monotonic() - started:.1f}s)"
    )
    os.environ.update(bakery.env_for(urls))
    before = bakery.census(urls, subject)
    owned = sum(sum(t.values()) for t in before.tenant_rows.values())
    say(f"   Tenant {subject} owns {owned:,} of them across the estate.")
    say()

    registry = bakery.registry()
    store_engine = create_engine(f"sqlite:///{where / 'jobs.db'}")
    migrate.upgrade(store_engine)
    store = JobStore(store_engine)
    demo_settings = settings.model_copy(
        update={"database_url": f"sqlite:///{where / 'jobs.db'}", "config": bakery.REGISTRY_PATH}
    )
    use_resources(Resources(settings=demo_settings, registry=registry, store=store))

    target = create_engine(urls[SHOWN_SERVICE])
    try:
        plan = plan_service(target, registry.sql_service(SHOWN_SERVICE), ["tenant_id"])
    finally:
        target.dispose()
    say(f"2. Plan for tenant {subject} in {SHOWN_SERVICE!r} (children first):")
    for i, step in enumerate(plan.steps, 1):
        say(f"   {i:>2}. {step.table!s:<30} {step.action.value}")
    for cycle in plan.cycles:
        say(f"   cycle {' -> '.join(cycle.path)}")
        say(f"         broken by: {cycle.strategy.value}")
    say()

    with EmbeddedWorker(demo_settings):
        dry = _job(store, registry, demo_settings, subject, dry_run=True, say=say, label="3")
        say()
        real = _job(store, registry, demo_settings, subject, dry_run=False, say=say, label="4")
    say()

    say(f"5. Job record {real.id}")
    same = "the same" if dry.total_rows == real.total_rows else "DIFFERENT"
    say(f"   {real.status}: {real.total_rows:,} rows removed; the dry run counted {same}")
    say(f"   {'service':<14} {'status':<10} {'rows':>7}  {'verified':<8}  schema")
    with store.transaction() as session:
        job = session.get(Job, real.id)
        assert job is not None  # noqa: S101 - it was just read
        fingerprints = {t.service: t.plan_fingerprint or "" for t in job.tasks}
    for task in real.tasks:
        fp = fingerprints[task.service].removeprefix("sha256:")[:12]
        say(f"   {task.service:<14} {task.status:<10} {task.rows:>7,}  {task.verified!s:<8}  {fp}")
    say()

    after = bakery.census(urls, subject)
    left = sum(sum(t.values()) for t in after.tenant_rows.values())
    anonymized = sum(
        n
        for service, counts in after.tenant_rows.items()
        for table, n in counts.items()
        if registry.sql_service(service).tables.get(table) is not None
    )
    untouched = before.fingerprint == after.fingerprint
    verified = all(t.verified for t in real.tasks)
    say("6. Evidence")
    say(f"   every service verified that no row of tenant {subject} remains: {verified}")
    say(f"   rows of tenant {subject} still in the estate: {left} (anonymized, kept by policy)")
    say(
        "   other tenants and shared rows (suppliers, weather): "
        + ("byte-identical" if untouched else "CHANGED")
    )
    say(f"   fingerprint before {before.fingerprint[:16]}, after {after.fingerprint[:16]}")
    keys = keyring(settings)
    with store.transaction() as session:
        finished = session.get(Job, real.id)
        assert finished is not None  # noqa: S101 - it was just read
        cert = certificate.build(finished, keys)
    jwks = keys.public_jwks()
    intact = _verdict(cert, jwks) == "valid"
    caught = _verdict(_forged(cert), jwks)
    (where / "certificate.jws").write_text(cert + "\n", encoding="utf-8")
    (where / "jwks.json").write_text(json.dumps(jwks, indent=2), encoding="utf-8")
    dev = " (dev key)" if keys.dev else ""
    say(f"   certificate: Ed25519 JWS{dev}, subject as a keyed hash; verifies: {intact}")
    say(f"   a forged count in it is caught: {caught.split(':')[0]}")
    ok = (
        real.status == JobStatus.SUCCEEDED
        and dry.status == JobStatus.SUCCEEDED
        and verified
        and untouched
        and dry.total_rows == real.total_rows
        and intact
        and caught != "valid"
        and left == anonymized
    )
    say()
    say("Done: tenant erased, nothing else touched." if ok else "Something did not check out.")
    store.dispose()
    return ok


def _job(
    store: JobStore,
    registry: Registry,
    settings: Settings,
    subject: int,
    *,
    dry_run: bool,
    say: Callable[[str], None],
    label: str,
) -> JobView:
    job, _ = submit(
        store,
        registry,
        ErasureRequest(
            subject_kind="tenant",
            subject_value=str(subject),
            services=list(SERVICES),  # the SQL databases: the embedded default has no stores
            dry_run=dry_run,
            requested_by="demo",
            reason="eraser demo",
        ),
        settings.job_timeout_seconds,
    )
    kind = "Dry run (read-only)" if dry_run else "Erasure"
    say(f"{label}. {kind}: job {job.id}")
    say("   one task per service, through the Celery chord:")
    started = time.monotonic()
    request_dispatch(store, registry, job.id, settings.default_queue)
    seen: set[str] = set()
    while True:
        with store.transaction() as session:
            current = session.get(Job, job.id)
            assert current is not None  # noqa: S101 - jobs are never deleted here
            view = JobView.of(current)
        for task in view.tasks:
            if task.status in ("succeeded", "failed") and task.service not in seen:
                seen.add(task.service)
                verb = "would remove" if dry_run else "removed"
                say(
                    f"   [{len(seen):>2}/{len(view.tasks)}] {task.service:<14} {task.status:<10}"
                    f" {verb} {task.rows:>6,} rows  {time.monotonic() - started:5.2f}s"
                )
        if JobStatus(view.status).terminal:
            say(
                f"   job {view.status}: {view.total_rows:,} rows "
                f"in {time.monotonic() - started:.2f}s"
            )
            return view
        time.sleep(0.05)


def _stores_line() -> str:
    """The registry's cache and object store, named with what they are."""
    return ", ".join(f"{name} ({what})" for name, what in STORE_SERVICES.items())


def _verdict(token: str, jwks: dict[str, Any]) -> str:
    try:
        certificate.verify(token, jwks)
    except certificate.InvalidCertificate as exc:
        return str(exc)
    return "valid"


def _forged(token: str) -> str:
    """The certificate with one more row in its first service, signature unchanged."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["services"][0]["rows"] += 1
    raw = json.dumps(claims, separators=(",", ":")).encode()
    return ".".join([header, base64.urlsafe_b64encode(raw).decode().rstrip("="), signature])
