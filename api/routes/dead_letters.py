"""``/v1/dead-letters``: tasks that failed for good, and their replay."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.dependencies import Admin, AppRegistry, AppSettings, Store
from api.problems import Problem
from api.routes.jobs import RetryAnswer
from models.store import queries
from tasks.submit import RetryRefused, replay_dead_letter

router = APIRouter(prefix="/v1/dead-letters", tags=["dead letters"])


class DeadLetterView(BaseModel):
    id: int
    job_id: str
    service: str
    reason: str
    error: str
    attempts: int
    created_at: datetime
    replayed_at: datetime | None
    replayed_by: str | None


@router.get("", response_model=list[DeadLetterView])
def dead_letters(
    _key: Admin,
    store: Store,
    job_id: Annotated[str | None, Query(max_length=36)] = None,
    include_replayed: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[DeadLetterView]:
    """Newest first; replayed ones only with ``include_replayed``."""
    with store.transaction(durable=False) as session:
        letters = queries.list_dead_letters(
            session, limit=limit, job_id=job_id, include_replayed=include_replayed
        )
        return [DeadLetterView.model_validate(d, from_attributes=True) for d in letters]


@router.post("/{letter_id}/replay", response_model=RetryAnswer)
def replay(
    letter_id: int, key: Admin, store: Store, settings: AppSettings, registry: AppRegistry
) -> RetryAnswer:
    """Run the dead letter's task again, in a new chord (once per dead letter)."""
    try:
        job_id, service = replay_dead_letter(
            store,
            registry,
            letter_id,
            settings.default_queue,
            actor=f"key:{key.id}",
            timeout_seconds=settings.job_timeout_seconds,
        )
    except RetryRefused as exc:
        status = 404 if "no dead letter" in str(exc) else 409
        kind = "dead-letter-not-found" if status == 404 else "already-replayed"
        raise Problem(status, kind, "Cannot replay", str(exc)) from None
    return RetryAnswer(job_id=job_id, services=[service])
