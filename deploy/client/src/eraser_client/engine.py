"""``engine_erasure``: Eraser's own engine over the service's database, as the ``erase``
callable of ``erasure_router``. It needs the ``eraser`` package (the engine), imported
only when this function is called: the client itself does not depend on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eraser_client.erasures import Erase, ErasureRequest, ErasureResult


class UnknownSubjectKind(ValueError):
    """The request names a subject kind this service was not told the columns of."""

    transient = False


def engine_erasure(
    url: str,
    subjects: Mapping[str, str | Sequence[str]],
    *,
    schemas: Sequence[str] = (),
    tables: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int = 2000,
) -> Erase:
    """Erase with Eraser's engine in the database at ``url`` (a SQLAlchemy URL).

    ``subjects`` maps each subject kind to its column(s), as the registry's
    ``[subjects.KIND]`` does; ``schemas``, ``tables`` (table policies) and ``batch_size``
    are a registry service's fields of the same names. Plans are made once per kind and
    kept while the schema is unchanged.
    """
    try:
        from models.registry import Service  # noqa: PLC0415 - the eraser package is optional
        from worker.database import create_engine  # noqa: PLC0415
        from worker.planning.model import REMOVING  # noqa: PLC0415
        from worker.service import PlanCache, run_service  # noqa: PLC0415
    except ImportError:
        raise ImportError("engine_erasure needs the eraser package installed") from None

    service = Service.model_validate(
        {
            "url_env": "SERVICE_DATABASE_URL",  # unused: the engine below is given the URL
            "schemas": list(schemas),
            "tables": {name: dict(policy) for name, policy in (tables or {}).items()},
            "batch_size": batch_size,
        }
    )
    engine = create_engine(url, existing=True)
    plans = PlanCache()
    columns = {kind: [c] if isinstance(c, str) else list(c) for kind, c in subjects.items()}

    def erase(request: ErasureRequest) -> ErasureResult:
        if request.subject_kind not in columns:
            raise UnknownSubjectKind(request.subject_kind)
        report = run_service(
            engine,
            "service",
            service,
            request.subject_kind,
            columns[request.subject_kind],
            request.subject_value,
            request.dry_run,
            plans=plans,
        )
        counts: dict[str, int] = {}
        for outcome in report.tables:
            # Rows removed only: a reference cleared, a row anonymized or reassigned
            # stays (Eraser records the counts it is told as rows removed).
            if outcome.action in REMOVING:
                counts[outcome.table] = counts.get(outcome.table, 0) + outcome.rows
        return ErasureResult(counts=counts, verified=report.verified)

    return erase
