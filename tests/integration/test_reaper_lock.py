"""The reaper's lock on a PostgreSQL job store: one round at a time across replicas."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from models.registry import Registry
from models.store.database import JobStore
from models.store.tables import (
    TaskStatus,
)
from tasks.reaper import REAPER_LOCK_KEY
from tests.unit.job_world import (
    _dispatched,
    _job,
    _reap,
    _update_task,
)

pytestmark = pytest.mark.usefixtures("in_process_broker")


@pytest.mark.parametrize(
    "store", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_one_reaper_round_at_a_time(store: JobStore, registry: Registry) -> None:
    job_id = _dispatched(store, registry)
    _update_task(store, job_id, "shop", status=TaskStatus.SUCCEEDED)
    # Another beat replica is in the middle of a round.
    with store.engine.connect() as other:
        other.execute(sa.select(sa.func.pg_advisory_lock(REAPER_LOCK_KEY)))
        try:
            skipped = _reap(store, registry)
        finally:
            other.execute(sa.select(sa.func.pg_advisory_unlock(REAPER_LOCK_KEY)))
            other.commit()

    assert not skipped.ran
    assert not skipped.acted
    assert _job(store, job_id).status == "running"
    assert _reap(store, registry).finalized == [job_id]
