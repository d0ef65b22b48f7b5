"""The subject's privacy on a PostgreSQL job store: the unit tests of
``test_subject_privacy`` again, and a ``pg_dump`` of the whole job store after a job
ran to success through the real task code (beside a failed job within its
retention), scanned for the values and for the unkeyed digests older versions kept
(0 hits of each)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from models.messages import ErasureRequest
from models.registry import Registry
from models.store.database import JobStore
from models.store.sealing import request_digest
from tasks.execution import Delivery
from tasks.finalize import finalize
from tasks.submit import dispatch, submit
from tests.unit.job_world import (
    OTHER,
    QUEUE,
    SUBJECT,
    Targets,
    _job,
    _run,
    _settings,
    store_on_postgresql,
)
from tests.unit.test_subject_privacy import (
    test_a_cancelled_job_drops_the_value,
    test_a_failed_job_keeps_the_value_for_its_retention_then_the_reaper_purges_it,
    test_a_job_that_matched_nothing_anywhere_says_so,
    test_idempotency_keys_are_scoped_per_api_key,
    test_seal_round_trip_and_key_rotation,
    test_the_value_is_sealed_until_the_job_succeeds_then_purged,
)

#: The unit tests collected here again.
__all__ = [
    "test_a_cancelled_job_drops_the_value",
    "test_a_failed_job_keeps_the_value_for_its_retention_then_the_reaper_purges_it",
    "test_a_job_that_matched_nothing_anywhere_says_so",
    "test_idempotency_keys_are_scoped_per_api_key",
    "test_seal_round_trip_and_key_rotation",
    "test_the_value_is_sealed_until_the_job_succeeds_then_purged",
]

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("in_process_broker")]

#: Every test of this module runs on a PostgreSQL job store.
store = store_on_postgresql


def _pg_dump(store: JobStore) -> str:
    """The job store's database as ``pg_dump`` writes it (schema and data)."""
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        pytest.skip("pg_dump is not installed")
    url = store.engine.url.set(drivername="postgresql")
    return subprocess.run(
        [pg_dump, "--no-owner", f"--dbname={url.render_as_string(hide_password=False)}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout


def test_a_dump_of_the_job_store_after_a_succeeded_job_holds_nothing_of_the_subject(
    store: JobStore, registry: Registry, targets: Targets
) -> None:
    request = ErasureRequest(
        subject_kind="tenant",
        subject_value=SUBJECT,
        services=["shop", "billing"],
        idempotency_key="offboard-acme",
        requested_by="ops",
    )
    job, created = submit(store, registry, request, owner="key0000a1")
    assert created
    assert dispatch(store, registry, job.id, QUEUE)
    for service in ("billing", "shop"):
        _run(store, registry, _settings(), job.id, service, targets, Delivery(f"c-{service}"))
    assert finalize(store, job.id) == "succeeded"
    assert _job(store, job.id).total_rows == 42  # 10 customers, 30 orders, 2 invoices
    # Beside it, a failed job within its retention: its value is kept, sealed.
    targets.engines.pop("billing")
    kept = ErasureRequest(subject_kind="tenant", subject_value=OTHER, services=["billing"])
    failed, _ = submit(store, registry, kept)
    _run(store, registry, _settings(), failed.id, "billing", targets, Delivery("c-failed"))
    assert finalize(store, failed.id) == "failed"
    sealed = _job(store, failed.id).subject_value
    assert sealed is not None

    dump = _pg_dump(store)
    searched = {
        "value": SUBJECT,
        "sha256(value)": hashlib.sha256(SUBJECT.encode()).hexdigest(),
        "sha256(kind:value)": hashlib.sha256(f"tenant:{SUBJECT}".encode()).hexdigest(),
        "sha256(request), the old request_hash": request_digest(request),
        "the failed job's value": OTHER,
        "sha256(the failed job's value)": hashlib.sha256(OTHER.encode()).hexdigest(),
    }
    hits = {name: dump.count(needle) for name, needle in searched.items()}
    assert hits == dict.fromkeys(searched, 0)
    # The scan reads the data: the job, its keyed hash and its audit trail are there.
    assert dump.count(job.id) >= 3
    assert store.seal.subject_hash("tenant", SUBJECT) in dump
    assert sealed in dump  # kept, but only as its Fernet token
    print(f"pg_dump of the job store: {len(dump)} characters, hits {hits}")
