"""The job store's world (``tests.unit.job_world``) for the integration tests of tasks
and the job store on PostgreSQL: its fixtures, found by name."""

from tests.unit.job_world import in_process_broker, registry, store, targets

__all__ = ["in_process_broker", "registry", "store", "targets"]
