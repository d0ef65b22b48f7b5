"""Executing a plan: the entry points (``erasure``: ``erase``, ``dry_run``), the walk
and its collaborators (transactions, batch removal, reference checks, cycles,
self-references, server-side batches), the pre-flight checks and the verification."""
