"""Nothing of the subject left in the job store: the value sealed at rest, purged when
the job succeeds or is cancelled, kept for the retention period when it failed (then
purged by the reaper, and a retry refused), idempotency keys scoped per API key, and
``nothing_matched`` as an outcome of its own. Run again on PostgreSQL by
``tests/integration/test_subject_privacy_on_postgresql.py``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from models import migrate
from models.messages import ErasureRequest, JobView
from models.registry import Registry
from models.store.database import JobStore
from models.store.exceptions import SubjectPurged
from models.store.purging import reseal_values
from models.store.sealing import SubjectSeal, UnreadableSubject, keyed
from models.store.tables import Job, utcnow
from tasks.execution import Delivery
from tasks.finalize import finalize
from tasks.requests import shows_value
from tasks.submit import (
    IdempotencyConflict,
    cancel_job,
    dispatch,
    replay_dead_letter,
    retry_job,
    submit,
)
from tests.unit.job_world import (
    QUEUE,
    SUBJECT,
    Targets,
    _job,
    _letters,
    _reap,
    _run,
    _settings,
    _submit,
    _task,
    _update_job,
)
from worker.database import create_engine

pytestmark = pytest.mark.usefixtures("in_process_broker")


def _view(store: JobStore, job_id: str) -> JobView:
    with store.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return JobView.of(job)


def _succeeded(store: JobStore, registry: Registry, targets: Targets) -> str:
    job_id = _submit(store, registry, "shop")
    assert dispatch(store, registry, job_id, QUEUE)
    _run(store, registry, _settings(), job_id, "shop", targets, Delivery("c-shop"))
    assert finalize(store, job_id) == "succeeded"
    return job_id


def _partially_failed(store: JobStore, registry: Registry, targets: Targets) -> str:
    """shop succeeded; billing failed for good (its URL is not set)."""
    billing = targets.engines.pop("billing")
    job_id = _submit(store, registry, "shop", "billing")
    assert dispatch(store, registry, job_id, QUEUE)
    _run(store, registry, _settings(), job_id, "shop", targets, Delivery("c-shop"))
    _run(store, registry, _settings(), job_id, "billing", targets, Delivery("c-billing"))
    assert finalize(store, job_id) == "partially_failed"
    targets.engines["billing"] = billing
    return job_id


def test_the_value_is_sealed_until_the_job_succeeds_then_purged(
    store: JobStore, registry: Registry, targets: Targets
) -> None:
    job_id = _submit(store, registry, "shop")
    stored = _job(store, job_id).subject_value
    assert stored is not None
    assert SUBJECT not in stored
    assert store.seal.open(stored) == SUBJECT

    assert dispatch(store, registry, job_id, QUEUE)
    outcome = _run(store, registry, _settings(), job_id, "shop", targets, Delivery("c-shop"))
    assert outcome.result.total_rows == 40  # the task opened the value: it erased rows
    assert finalize(store, job_id) == "succeeded"

    job = _job(store, job_id)
    assert (job.subject_value, job.purged_at is not None) == (None, True)
    assert job.subject_hash == store.seal.subject_hash("tenant", SUBJECT)
    view = _view(store, job_id)
    assert (view.subject_purged, view.nothing_matched, view.total_rows) == (True, False, 40)
    assert view.tasks[0].nothing_matched is False


def test_a_cancelled_job_drops_the_value(store: JobStore, registry: Registry) -> None:
    job_id = _submit(store, registry, "shop", "billing")
    assert cancel_job(store, job_id) == ["billing", "shop"]  # and finalizes the job

    job = _job(store, job_id)
    assert (job.status, job.subject_value) == ("cancelled", None)
    assert job.purged_at is not None


def test_a_failed_job_keeps_the_value_for_its_retention_then_the_reaper_purges_it(
    store: JobStore, registry: Registry, targets: Targets
) -> None:
    job_id = _partially_failed(store, registry, targets)
    kept = _job(store, job_id).subject_value
    assert kept is not None
    assert store.seal.open(kept) == SUBJECT

    report = _reap(store, registry, subject_retention_days=30)
    assert report.purged == []
    assert _job(store, job_id).subject_value == kept

    # Finished 31 days ago: past the retention.
    _update_job(store, job_id, finished_at=utcnow() - timedelta(days=31))
    report = _reap(store, registry, subject_retention_days=30)
    assert report.purged == [job_id]
    job = _job(store, job_id)
    assert (job.subject_value, job.status) == (None, "partially_failed")
    assert job.subject_hash == store.seal.subject_hash("tenant", SUBJECT)  # the record stays
    assert _view(store, job_id).subject_purged

    with pytest.raises(SubjectPurged, match="purged after its retention period") as refused:
        retry_job(store, registry, job_id, QUEUE)
    assert refused.value.job_id == job_id
    [letter] = _letters(store, job_id)
    with pytest.raises(SubjectPurged):
        replay_dead_letter(store, registry, letter.id, QUEUE)
    assert _task(store, job_id, "billing").status == "failed"  # nothing was reset


def test_a_retained_failed_job_can_still_be_retried(
    store: JobStore, registry: Registry, targets: Targets
) -> None:
    job_id = _partially_failed(store, registry, targets)
    assert retry_job(store, registry, job_id, QUEUE) == ["billing"]
    _run(store, registry, _settings(), job_id, "billing", targets, Delivery("c-billing-2"))
    assert finalize(store, job_id) == "succeeded"
    assert _job(store, job_id).subject_value is None


def test_a_job_that_matched_nothing_anywhere_says_so(
    store: JobStore, registry: Registry, targets: Targets
) -> None:
    nobody = ErasureRequest(
        subject_kind="tenant", subject_value="no-such-tenant", services=["shop", "billing"]
    )
    job, _ = submit(store, registry, nobody)
    for service in ("billing", "shop"):
        _run(store, registry, _settings(), job.id, service, targets, Delivery(f"c-{service}"))
    assert finalize(store, job.id) == "succeeded"

    view = _view(store, job.id)
    assert (view.status, view.total_rows, view.nothing_matched) == ("succeeded", 0, True)
    assert [t.nothing_matched for t in view.tasks] == [True, True]

    dry = ErasureRequest(
        subject_kind="tenant", subject_value="no-such-tenant", dry_run=True, services=["shop"]
    )
    dry_job, _ = submit(store, registry, dry)
    _run(store, registry, _settings(), dry_job.id, "shop", targets, Delivery("c-dry"))
    assert finalize(store, dry_job.id) == "succeeded"
    assert _view(store, dry_job.id).nothing_matched is False  # a dry run erases nothing


def test_idempotency_keys_are_scoped_per_api_key(store: JobStore, registry: Registry) -> None:
    request = ErasureRequest(
        subject_kind="tenant", subject_value=SUBJECT, services=["shop"], idempotency_key="offboard"
    )
    first, created = submit(store, registry, request, owner="key0000a1")
    again, created_again = submit(store, registry, request, owner="key0000a1")
    theirs, created_theirs = submit(store, registry, request, owner="key0000b2")
    cli, created_cli = submit(store, registry, request)

    assert (created, created_again, created_theirs, created_cli) == (True, False, True, True)
    assert again.id == first.id
    assert len({first.id, theirs.id, cli.id}) == 3

    # Another key reusing "offboard" with another subject learns nothing: a new job.
    other = request.model_copy(update={"subject_value": "someone-else"})
    guess, created_guess = submit(store, registry, other, owner="key0000c3")
    assert created_guess
    assert guess.id not in {first.id, theirs.id, cli.id}
    # The owner reusing its own key with another body is told so (its own job only).
    with pytest.raises(IdempotencyConflict) as conflict:
        submit(store, registry, other, owner="key0000a1")
    assert conflict.value.job_id == first.id


def test_seal_round_trip_and_key_rotation(store: JobStore, registry: Registry) -> None:
    old_key, new_key = Fernet.generate_key(), Fernet.generate_key()
    pepper = b"p" * 32
    old = SubjectSeal(keys=(old_key,), pepper=pepper)
    token = old.seal(SUBJECT)
    assert SUBJECT not in token
    assert old.open(token) == SUBJECT

    rotated = SubjectSeal(keys=(new_key, old_key), pepper=pepper)
    assert rotated.open(token) == SUBJECT  # the retired key still opens it
    assert not rotated.sealed_under_current(token)
    with pytest.raises(UnreadableSubject):
        SubjectSeal(keys=(new_key,), pepper=pepper).open(token)

    # The store's values are sealed again under the new key; then the old one can go.
    old_store = JobStore(store.engine, old)
    job, _ = submit(
        old_store, registry, ErasureRequest(subject_kind="tenant", subject_value=SUBJECT)
    )
    new_store = JobStore(store.engine, rotated)
    with new_store.transaction() as session:
        assert reseal_values(session, rotated) == 1
    with new_store.transaction() as session:
        assert reseal_values(session, rotated) == 0
    stored = _job(store, job.id).subject_value
    assert stored is not None
    assert SubjectSeal(keys=(new_key,), pepper=pepper).open(stored) == SUBJECT


def test_an_unreadable_value_fails_the_task_with_a_clear_error(
    store: JobStore, registry: Registry, targets: Targets
) -> None:
    job_id = _submit(store, registry, "shop")
    foreign = SubjectSeal(keys=(Fernet.generate_key(),), pepper=b"p" * 32)
    _update_job(store, job_id, subject_value=foreign.seal(SUBJECT))
    outcome = _run(store, registry, _settings(), job_id, "shop", targets, Delivery("c-shop"))
    assert outcome.result.status == "failed"
    error = _task(store, job_id, "shop").error or ""
    assert "cannot be decrypted" in error
    assert SUBJECT not in error


def test_the_migration_seals_or_purges_the_values_stored_before_it(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate.upgrade(engine, "0002")
    now = utcnow()
    rows = [
        ("job-running", "running", None, "digest-running"),
        ("job-failed", "failed", now, "digest-failed"),
        ("job-done", "succeeded", now, "digest-done"),
    ]
    with engine.begin() as conn:
        for job_id, status, finished, digest in rows:
            conn.execute(
                sa.text(
                    "INSERT INTO eraser_jobs (id, subject_kind, subject_value, services, dry_run,"
                    " idempotency_key, request_hash, status, total_rows, created_at, updated_at,"
                    " finished_at) VALUES (:id, 'tenant', :value, '[]', 0, :key, :digest,"
                    " :status, 0, :now, :now, :finished)"
                ),
                {
                    "id": job_id,
                    "value": f"plain-{job_id}",
                    "key": f"k-{job_id}",
                    "digest": digest,
                    "status": status,
                    "now": now,
                    "finished": finished,
                },
            )
    migrate.upgrade(engine)
    store = JobStore(engine)  # the settings' seal, as the migration's
    seal = store.seal
    for job_id, status, _finished, digest in rows:
        job = _job(store, job_id)
        assert job.request_hash == keyed(seal.pepper, digest)
        assert job.subject_hash == seal.subject_hash("tenant", f"plain-{job_id}")
        assert job.owner == ""
        if status == "succeeded":
            assert (job.subject_value, job.purged_at is not None) == (None, True)
        else:
            assert job.subject_value is not None
            assert f"plain-{job_id}" not in job.subject_value
            assert seal.open(job.subject_value) == f"plain-{job_id}"
    with engine.connect() as conn:
        dump = "\n".join(str(tuple(r)) for r in conn.execute(sa.text("SELECT * FROM eraser_jobs")))
    assert "plain-job" not in dump
    engine.dispose()


@pytest.mark.parametrize(
    ("kwargsrepr", "shown"),
    [
        ("{...}", False),
        ("{'subject_kind': 'tenant', 'subject_value': '***'}", False),
        (None, True),  # no header (protocol 1): monitors show the arguments
        (f"{{'subject_kind': 'tenant', 'subject_value': '{SUBJECT}'}}", True),
        ("{'subject_value': 'acme-5b1e9...", True),  # cut short by saferepr
    ],
)
def test_a_kwargsrepr_that_shows_the_value_is_recognised(
    kwargsrepr: str | None, shown: bool
) -> None:
    fields = {"subject_kind": "tenant", "subject_value": SUBJECT}
    assert shows_value(kwargsrepr, fields) is shown
    assert shows_value("{...}", {"subject_kind": 5}) is False  # nothing to show
