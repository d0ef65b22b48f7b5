"""Executions, leases, retries and the reaper on a PostgreSQL job store: the unit
tests of ``test_leases``, ``test_retries`` and ``test_reaper`` run again against it.

Leases, because taking one over computes ``now - task.heartbeat_at``; retries,
because a retry computes ``max(job.deadline_at, ...)`` (both mix the store's
timestamps with the worker's clock); the deadline, because a reaper round runs under
the reaper's advisory lock there.
"""

from __future__ import annotations

import pytest

from tests.unit.job_world import store_on_postgresql
from tests.unit.test_leases import (
    test_a_live_lease_makes_the_execution_wait,
    test_a_poison_message_is_dead_lettered,
    test_a_stale_lease_is_taken_over,
    test_own_redelivery_takes_over_a_fresh_lease,
    test_rows_removed_before_a_crash_are_counted,
)
from tests.unit.test_reaper import (
    test_reaper_fails_what_is_left_past_the_deadline,
)
from tests.unit.test_retries import (
    test_replay_dead_letter_once,
    test_retry_job_reruns_only_the_failed_tasks,
)

#: The unit tests collected here again.
__all__ = [
    "test_a_live_lease_makes_the_execution_wait",
    "test_a_poison_message_is_dead_lettered",
    "test_a_stale_lease_is_taken_over",
    "test_own_redelivery_takes_over_a_fresh_lease",
    "test_reaper_fails_what_is_left_past_the_deadline",
    "test_replay_dead_letter_once",
    "test_retry_job_reruns_only_the_failed_tasks",
    "test_rows_removed_before_a_crash_are_counted",
]

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("in_process_broker")]

#: Every test of this module runs on a PostgreSQL job store.
store = store_on_postgresql
