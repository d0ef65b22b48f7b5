"""One differential check: Eraser's erasure of a case against the cascade oracle.

For each batch size the case is loaded afresh and erased; the outcome must be one of

* an erasure that leaves every table row for row as the oracle does, with counts (in
  the dry run and in the report) equal to the oracle's per table, verified, and no
  dangling reference;
* a refusal (an ``EraserError``) before the first write: every table exactly as
  before (a dry run that refuses means the erasure must refuse too). A refusal is
  correct only where the oracle removed a row of another owner
  (``CrossSubjectReference``); any other refusal of a case the cascade erases is a
  defect and is reported as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from models.erasure import ErasureReport, TableAction
from tests.differential.ddl import Schemas
from tests.differential.erasure import DEFAULT_BATCH, erase_subject
from tests.differential.loading import drop, load
from tests.differential.oracle import Expected, expected
from tests.differential.schemas import SUBJECT, Case
from tests.differential.snapshot import Tables, dangling, snapshot
from worker.exceptions import CrossSubjectReference, EraserError

BATCH_SIZES = (1, 3, DEFAULT_BATCH)


@dataclass(frozen=True)
class Target:
    """The database Eraser erases from, and the twin the oracle runs in."""

    url: str
    engine: sa.Engine
    twin: sa.Engine
    schemas: Schemas

    @property
    def reflected(self) -> list[str]:
        return [s for s in (self.schemas.main, self.schemas.other) if s]


def counts(report: ErasureReport, action: TableAction) -> dict[str, int]:
    """Rows per table for one action, zeros left out."""
    found: dict[str, int] = {}
    for o in report.tables:
        if o.action is action and o.rows:
            found[o.table] = found.get(o.table, 0) + o.rows
    return found


def first_difference(got: Tables, want: Tables) -> str | None:
    """The first table whose rows differ, with the ids that differ, or None."""
    for name, rows in want.items():
        have = got[name]
        if have != rows:
            extra = sorted(set(have) - set(rows))
            missing = sorted(set(rows) - set(have))
            changed = sorted(k for k in set(have) & set(rows) if have[k] != rows[k])
            detail = [f"left {extra}" if extra else "", f"removed {missing}" if missing else ""]
            detail += [f"id {k}: {have[k]} != oracle {rows[k]}" for k in changed[:3]]
            return f"{name}: " + " ".join(d for d in detail if d)
    return None


def _check_counts(label: str, report: ErasureReport, want: Expected) -> None:
    assert counts(report, TableAction.DELETE) == want.deleted, (
        f"{label} delete counts {counts(report, TableAction.DELETE)} != oracle {want.deleted}"
    )
    assert report.total_rows == sum(want.deleted.values()), (
        f"{label} total_rows {report.total_rows} != oracle {sum(want.deleted.values())}"
    )


def _refusal(exc: EraserError, target: Target, case: Case, before: Tables, want: Expected) -> None:
    after, _ = snapshot(target.engine, case, target.schemas)
    diff = first_difference(after, before)
    assert diff is None, f"refused ({type(exc).__name__}: {exc}) after writing: {diff}"
    if isinstance(exc, CrossSubjectReference) and want.others_removed:
        return
    raise AssertionError(
        f"refused a case the cascade erases: {type(exc).__name__}: {exc}"
        f" (oracle removed other owners' rows: {want.others_removed})"
    )


def check(target: Target, case: Case, batch_sizes: Sequence[int] = BATCH_SIZES) -> None:
    """Erase the subject of ``case`` at every batch size and compare with the oracle."""
    want = expected(target.twin, case, target.schemas)
    for round_, batch in enumerate(batch_sizes):
        load(target.engine, case, target.schemas)
        try:
            before, _ = snapshot(target.engine, case, target.schemas)
            assert before == want.before, "the two databases do not hold the same rows"
            refused = False
            if round_ == 0:
                try:
                    predicted = erase_subject(
                        target.url,
                        ["tenant_id"],
                        SUBJECT,
                        count_only=True,
                        schemas=target.reflected,
                    )
                except EraserError as exc:
                    _refusal(exc, target, case, before, want)
                    refused = True
                else:
                    _check_counts("dry run", predicted, want)
            try:
                report = erase_subject(
                    target.url, ["tenant_id"], SUBJECT, batch, schemas=target.reflected
                )
            except EraserError as exc:
                _refusal(exc, target, case, before, want)
                return
            assert not refused, "the dry run refused, the erasure ran"
            label = f"batch size {batch}:"
            after, audit = snapshot(target.engine, case, target.schemas)
            diff = first_difference(after, want.after)
            assert diff is None, f"{label} rows differ from the oracle: {diff}"
            assert audit == want.audit, f"{label} audit log {audit} != oracle {want.audit}"
            assert not dangling(target.engine, case, target.schemas), label
            assert report.verified, f"{label} not verified"
            _check_counts(f"{label} report", report, want)
        finally:
            drop(target.engine, case.backend, target.schemas)
