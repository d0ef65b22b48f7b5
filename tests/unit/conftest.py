"""The job store's world (``job_world``) for the unit tests of tasks and the job store:
its fixtures, found by name."""

from tests.unit.job_world import in_process_broker, registry, store, targets

__all__ = ["in_process_broker", "registry", "store", "targets"]
