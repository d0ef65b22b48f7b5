"""What an erasure is asked to do in one database, and what it reports back."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

#: A value an ``anonymize`` policy writes into a column.
ScalarValue = str | int | float | bool | None


class TableAction(StrEnum):
    """What happens to one table's rows of the subject."""

    #: The subject's rows are deleted (the default for every reachable table).
    DELETE = "delete"
    #: The table is left alone; a plan refuses to run if kept rows would block a delete.
    KEEP = "keep"
    #: The subject's rows stay but the listed columns are overwritten.
    ANONYMIZE = "anonymize"
    #: A link table to a shared entity: only the subject's links are deleted.
    UNLINK = "unlink"
    #: A shared entity: a row is deleted only when the subject held its last link.
    DELETE_IF_ORPHANED = "delete_if_orphaned"
    #: Rows that reference the subject's rows stay, their reference moved to a
    #: placeholder row (``reassign_to``): an erased salesperson's orders go to a
    #: placeholder employee.
    REASSIGN = "reassign"
    #: Not a policy: the engine sets a foreign key to NULL (an ``ON DELETE SET NULL``
    #: reference from a row that is not the subject's, or a broken cycle).
    NULLIFY = "nullify"


class TablePolicy(BaseModel):
    """A per-table policy, keyed by ``table`` or ``schema.table``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: TableAction = TableAction.DELETE
    #: Column -> value, for ``anonymize`` only.
    set: dict[str, ScalarValue] = Field(default_factory=dict)
    #: For ``reassign`` only: the key of the placeholder row the references move to.
    reassign_to: ScalarValue = None


class TableOutcome(BaseModel):
    """Rows touched (or, in a dry run, that would be touched) in one table by one action."""

    model_config = ConfigDict(frozen=True)

    table: str
    action: TableAction
    rows: int
    #: Bytes the rows held, where the store says (S3 objects); None for SQL tables.
    bytes: int | None = None


class ErasureReport(BaseModel):
    """The result of one erasure (or dry run) in one database. Never holds row data."""

    dry_run: bool
    tables: list[TableOutcome]
    #: Rows removed (or that a dry run would remove), rows deleted by cascades included.
    #: For a Redis service: keys; for an S3 service: objects (versions and delete markers).
    total_rows: int
    #: Bytes removed, where the store says (S3); None for SQL and Redis services.
    total_bytes: int | None = None
    #: True when a final count found no row of the subject left in any erased table.
    verified: bool
    #: Execution passes: 1 normally, more when triggers or writers re-created subject rows.
    passes: int = 1
    schema_fingerprint: str
    warnings: list[str] = Field(default_factory=list)
    elapsed_seconds: float = 0.0
    #: Tables whose batches went with Eraser checking the references into them
    #: (``fk_checks``); every other batch was checked by the database's own triggers.
    checked_by_eraser: list[str] = Field(default_factory=list)
    #: Tables whose rows went in batches run inside the database server (PostgreSQL's
    #: server-side loop, ``server_batches``); every other batch was sent from Eraser a
    #: statement at a time.
    batched_in_server: list[str] = Field(default_factory=list)
    #: PostgreSQL: what compressed the full-page images the batches wrote to the WAL
    #: (``lz4`` when Eraser asked for it, the server's own setting when it already
    #: compresses; empty for none, or when nothing was written).
    wal_compression: str = ""
    #: Tables whose subject partition was (or, in a dry run, would be) removed whole,
    #: each with how: ``public.orders (truncate)``; their rows are counted as deleted.
    partitions_removed: list[str] = Field(default_factory=list)

    @property
    def nothing_matched(self) -> bool:
        """Nothing of the subject was (or, in a dry run, would be) removed."""
        return self.total_rows == 0
