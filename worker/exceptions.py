"""Every failure a user of the engine can meet, one class each.

Messages name tables, columns and constraints, never a subject's value or a DSN:
they end up in logs and task results that many people read.
"""

from __future__ import annotations

from collections.abc import Sequence


class EraserError(Exception):
    """Base class; ``str(error)`` is a one-line message fit for a terminal or a log."""

    #: False when retrying cannot help (bad input, a plan that cannot run).
    transient: bool = False


class DatabaseUnavailable(EraserError):
    """The target database could not be reached."""

    transient = True

    def __init__(self, target: str, reason: str, *, transient: bool = True) -> None:
        super().__init__(f"cannot connect to {target}: {reason}")
        self.target = target
        self.transient = transient


class UnknownSubjectColumn(EraserError):
    """No reflected table has the subject column(s)."""

    def __init__(self, columns: Sequence[str]) -> None:
        cols = ", ".join(columns)
        super().__init__(f"no table has the subject column(s) {cols}")
        self.columns = list(columns)


class UnknownTable(EraserError):
    """A policy or option names a table the database does not have."""

    def __init__(self, table: str, where: str) -> None:
        super().__init__(f"{where} names table {table!r}, which the database does not have")
        self.table = table


class UnsupportedTable(EraserError):
    """A table the engine cannot address row by row."""

    def __init__(self, table: str, reason: str) -> None:
        super().__init__(f"cannot erase from {table}: {reason}")
        self.table = table


class InvalidSubjectValue(EraserError):
    """The subject value does not fit the subject column's type."""

    def __init__(self, column: str, type_name: str) -> None:
        super().__init__(f"the subject value is not a valid {type_name} for column {column}")
        self.column = column


class UnsatisfiablePlan(EraserError):
    """The rows cannot be removed in any order this database accepts."""

    def __init__(self, cycle: Sequence[str], reason: str) -> None:
        path = " -> ".join(cycle)
        super().__init__(f"unsatisfiable plan: foreign-key cycle {path}: {reason}")
        self.cycle = list(cycle)


class PolicyConflict(EraserError):
    """A table policy contradicts the schema (checked before anything is touched)."""

    def __init__(self, table: str, reason: str) -> None:
        super().__init__(f"policy for {table}: {reason}")
        self.table = table


class KeptRowsBlock(EraserError):
    """Rows of a kept table reference rows that must be deleted."""

    def __init__(self, table: str, constraint: str, rows: int) -> None:
        super().__init__(
            f"{rows} row(s) of kept table {table} reference the subject's rows through "
            f"{constraint}; deleting would fail or cascade into kept data. Refusing before "
            "touching anything: set a policy for that table or change the constraint"
        )
        self.table = table
        self.constraint = constraint
        self.rows = rows


class CrossSubjectReference(EraserError):
    """Rows that belong to another subject reference this subject's rows."""

    def __init__(self, table: str, constraint: str, rows: int) -> None:
        super().__init__(
            f"{rows} row(s) of {table} that belong to another subject reference this "
            f"subject's rows through {constraint}; refusing before touching anything"
        )
        self.table = table
        self.constraint = constraint
        self.rows = rows


class SubjectLocked(EraserError):
    """Another erasure of the same subject held the lock for longer than the wait."""

    transient = True

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"another erasure of this subject is running (waited {seconds:g}s for its lock)"
        )


class SchemaDriftError(EraserError):
    """The schema changed between planning and execution."""

    def __init__(self, expected: str, found: str) -> None:
        super().__init__(f"schema changed under the plan: expected {expected}, found {found}")
        self.expected = expected
        self.found = found


class ReferenceChecksUnavailable(EraserError):
    """``fk_checks = "eraser"`` was asked for, but this database or role cannot have it."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"fk_checks = 'eraser' is not available: {reason}")
