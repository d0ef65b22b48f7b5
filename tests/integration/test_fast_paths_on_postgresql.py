"""The quick path, dispatch and the last task's finalize on a PostgreSQL job store: the
unit tests of ``test_quick_path``, ``test_dispatch`` and ``test_last_task_finalizes``
run again against it (the quick path's one-statement record, ``UPDATE ... RETURNING``
and ``INSERT ... SELECT`` with the count, exists only there).
"""

from __future__ import annotations

import pytest

from tests.unit import shop_world, test_last_task_finalizes
from tests.unit.job_world import store_on_postgresql
from tests.unit.test_dispatch import (
    test_a_chord_the_broker_refuses_is_left_to_the_reaper,
    test_submit_and_dispatch_stamps_the_job_before_the_chord_leaves,
    test_tasks_a_dead_submitter_never_sent_are_sent_by_the_reaper,
)
from tests.unit.test_last_task_finalizes import (
    test_a_job_with_nothing_to_erase_is_finished_by_its_only_task,
    test_the_last_task_finalizes_and_announces_the_job,
)
from tests.unit.test_quick_path import (
    test_a_subject_with_rows_is_erased_by_the_general_path,
    test_a_task_changed_after_the_read_is_left_to_the_general_path,
    test_a_task_claimed_while_its_job_is_cancelled_is_never_marked_cancelled_after_it_ran,
    test_a_task_with_nothing_to_erase_is_claimed_and_succeeds_at_once,
    test_duplicated_messages_racing_on_one_task_record_one_execution,
    test_last_says_whether_another_task_of_the_job_is_still_open,
    test_with_a_kept_plan_the_target_sees_one_read_and_the_job_store_two_statements,
)

#: The unit tests collected here again.
__all__ = [
    "test_a_chord_the_broker_refuses_is_left_to_the_reaper",
    "test_a_job_with_nothing_to_erase_is_finished_by_its_only_task",
    "test_a_subject_with_rows_is_erased_by_the_general_path",
    "test_a_task_changed_after_the_read_is_left_to_the_general_path",
    "test_a_task_claimed_while_its_job_is_cancelled_is_never_marked_cancelled_after_it_ran",
    "test_a_task_with_nothing_to_erase_is_claimed_and_succeeds_at_once",
    "test_duplicated_messages_racing_on_one_task_record_one_execution",
    "test_last_says_whether_another_task_of_the_job_is_still_open",
    "test_submit_and_dispatch_stamps_the_job_before_the_chord_leaves",
    "test_tasks_a_dead_submitter_never_sent_are_sent_by_the_reaper",
    "test_the_last_task_finalizes_and_announces_the_job",
    "test_with_a_kept_plan_the_target_sees_one_read_and_the_job_store_two_statements",
]

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("broker_emptied")]

#: Every test of this module runs on a PostgreSQL job store.
store = store_on_postgresql
#: The shop world's targets and broker (see ``tests.unit.shop_world``).
targets = shop_world.targets
broker_emptied = shop_world.broker_emptied
#: The worker (in-process resources) the last task's tests run with.
worker = test_last_task_finalizes.worker
