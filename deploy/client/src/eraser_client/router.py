"""``erasure_router``: the service side of Eraser's ``http`` protocol, as a FastAPI
router a service mounts in its own app (``pip install "eraser-client[router]"``)::

    from eraser_client import erasure_router

    app.include_router(erasure_router(secret=os.environ["ERASER_SECRET"], erase=my_erase))

``POST /erasures`` takes ``{job_id, subject_kind, subject_value, dry_run}`` signed as a
Standard Webhooks request, starts ``erase`` in a background thread and answers ``200``
with the outcome when it ends within ``answer_within`` seconds, else ``202``.
``GET /erasures/{job_id}``, signed over the job id, answers the job's state. Requests
whose signature does not verify, or whose timestamp is more than five minutes off, get
``401``; the subject's value is never echoed or logged.
"""

from __future__ import annotations

import asyncio
import binascii
import json
from collections.abc import Collection, Mapping
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from standardwebhooks.webhooks import (
    EmptyWebhookSecretError,
    Webhook,
    WebhookVerificationError,
)

from eraser_client.erasures import Erase, ErasureBook, ErasureConflict, ErasureRequest


def erasure_router(
    *,
    secret: str,
    erase: Erase,
    subject_kinds: Collection[str] | None = None,
    remember: int = 10_000,
    answer_within: float = 1.0,
) -> APIRouter:
    """A router answering Eraser's erasure requests with ``erase``.

    ``secret`` is the signing secret shared with Eraser (base64, optionally prefixed
    ``whsec_``); ``subject_kinds`` (default: any) are the kinds this service holds, others
    are refused with ``422``; ``remember`` is how many jobs' outcomes are kept;
    ``answer_within`` is how long a POST waits for the erasure before answering ``202``
    (a quick one is answered at once, with no poll).
    """
    try:
        signer = Webhook(secret)
    except (binascii.Error, ValueError, EmptyWebhookSecretError):
        raise ValueError("the secret must be base64, optionally prefixed whsec_") from None
    book = ErasureBook(erase, remember)
    router = APIRouter(prefix="/erasures", tags=["erasure"])

    @router.post("", status_code=202)
    async def start_erasure(request: Request) -> JSONResponse:
        """Start (or answer for) the erasure of one subject."""
        body = await request.body()
        _verify(signer, body, request.headers)
        erasure = _parse(body)
        if subject_kinds is not None and erasure.subject_kind not in subject_kinds:
            raise HTTPException(422, "this service holds no subjects of that kind")
        try:
            answer = book.start(erasure)
        except ErasureConflict:
            raise HTTPException(409, "this job id was used for another request") from None
        if answer["status"] == "running" and answer_within > 0:
            ended = await asyncio.to_thread(book.wait, erasure.job_id, answer_within)
            answer = ended if ended is not None else answer
        return JSONResponse(answer, status_code=202 if answer["status"] == "running" else 200)

    @router.get("/{job_id}")
    async def erasure_state(job_id: str, request: Request) -> JSONResponse:
        """The state of one job's erasure: running, done (with counts) or failed."""
        _verify(signer, job_id.encode(), request.headers)
        answer = book.state(job_id)
        if answer is None:
            raise HTTPException(404, "no erasure of this job here")
        return JSONResponse(answer)

    return router


def _verify(signer: Webhook, payload: bytes, headers: Mapping[str, str]) -> None:
    """401 unless the headers sign ``payload`` with the shared secret, timestamped
    within five minutes (the comparison is constant-time)."""
    try:
        signer.verify(payload, dict(headers), json_parse=False)
    except WebhookVerificationError:
        raise HTTPException(401, "the request's signature does not verify") from None


def _parse(body: bytes) -> ErasureRequest:
    """The request, or 400 naming the field at fault (never its value)."""
    try:
        raw: Any = json.loads(body)
    except ValueError:
        raise HTTPException(400, "the body is not JSON") from None
    if not isinstance(raw, dict):
        raise HTTPException(400, "the body is not a JSON object")
    for name in ("job_id", "subject_kind", "subject_value"):
        if not isinstance(raw.get(name), str) or not raw[name]:
            raise HTTPException(400, f"{name} must be a non-empty string")
    if not isinstance(raw.get("dry_run"), bool):
        raise HTTPException(400, "dry_run must be true or false")
    return ErasureRequest(
        job_id=raw["job_id"],
        subject_kind=raw["subject_kind"],
        subject_value=raw["subject_value"],
        dry_run=raw["dry_run"],
    )
