"""Submitting (``tasks.submit.submit`` over ``models.store.submission``): the job and
its tasks in one transaction, idempotency keys, and refusals of unknown kinds and
services.
"""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from models.messages import ErasureRequest
from models.registry import Registry
from models.store.database import JobStore
from models.store.tables import AuditEvent, Job, JobStatus
from tasks.submit import IdempotencyConflict, SubmitError, submit
from tests.unit import ghost_world

#: This world's registry: a shop, and a service whose URL is never set.
registry = ghost_world.registry
shop = ghost_world.shop


def test_submit_creates_the_job_and_its_tasks(store: JobStore, registry: Registry) -> None:
    job, created = submit(store, registry, ErasureRequest(subject_kind="tenant", subject_value="1"))
    assert created
    with store.transaction() as session:
        saved = session.get(Job, job.id)
        assert saved is not None
        assert saved.status == JobStatus.PENDING
        assert [t.service for t in saved.tasks] == ["ghost", "shop"]
        assert session.scalar(sa.select(AuditEvent.kind)) == "job.submitted"


def test_idempotency_key(store: JobStore, registry: Registry) -> None:
    request = ErasureRequest(subject_kind="tenant", subject_value="1", idempotency_key="k")
    first, created = submit(store, registry, request)
    again, created_again = submit(store, registry, request)
    assert created
    assert not created_again
    assert again.id == first.id
    other = request.model_copy(update={"subject_value": "2"})
    with pytest.raises(IdempotencyConflict, match=first.id):
        submit(store, registry, other)


def test_a_service_named_twice_is_the_same_request(store: JobStore, registry: Registry) -> None:
    """``submit`` makes one task of a service named twice, so the key's fingerprint must
    not tell the two requests apart (it answered 409 to the same job)."""
    once = ErasureRequest(
        subject_kind="tenant", subject_value="1", services=["shop", "ghost"], idempotency_key="k"
    )
    first, _ = submit(store, registry, once)
    twice = once.model_copy(update={"services": ["shop", "ghost", "shop"]})
    again, created = submit(store, registry, twice)
    assert (again.id, created) == (first.id, False)
    with pytest.raises(IdempotencyConflict, match=first.id):
        submit(store, registry, once.model_copy(update={"services": ["shop"]}))


@pytest.mark.parametrize(
    ("request_args", "message"),
    [
        ({"subject_kind": "user"}, "unknown subject kind (known: tenant)"),
        ({"services": ["billing"]}, "a requested service is not registered"),
    ],
)
def test_submit_refuses_unknown_kinds_and_services(
    store: JobStore, registry: Registry, request_args: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"subject_kind": "tenant", "subject_value": "1", **request_args}
    with pytest.raises(SubmitError, match=re.escape(message)):
        submit(store, registry, ErasureRequest.model_validate(args))
