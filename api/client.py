"""A small Python client for upstream services.

Over HTTP::

    from api.client import EraserClient
    with EraserClient("https://eraser.internal", api_key=SECRET) as eraser:
        job = eraser.submit("tenant", "42", idempotency_key="offboard-42")
        done = eraser.wait(job["id"], timeout=600)
        assert done["status"] == "succeeded"

Over a broker only (no HTTP): ``submit_via_celery(app, request)`` sends the request as
an ``eraser.submit_request`` message to the ``eraser.requests`` queue, with its
arguments hidden from Flower and logs.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from celery import Celery

from models.messages import ErasureRequest

TERMINAL = {"succeeded", "partially_failed", "failed", "cancelled"}


class EraserApiError(Exception):
    """The API answered with a problem document."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        detail = problem.get("detail") or problem.get("title") or "error"
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.problem = problem


class EraserClient:
    def __init__(self, base_url: str, api_key: str, timeout: float = 30.0) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
        )

    def __enter__(self) -> EraserClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self._http.request(method, path, **kwargs)
        if answer.status_code >= 400:
            try:
                problem = answer.json()
            except ValueError:
                problem = {"title": answer.text[:200]}
            raise EraserApiError(answer.status_code, problem)
        return answer.json()

    def submit(
        self,
        subject_kind: str,
        subject_value: str,
        *,
        services: list[str] | None = None,
        dry_run: bool = False,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Submit an erasure; returns the job (the first one for a repeated key)."""
        body: dict[str, Any] = {
            "subject_kind": subject_kind,
            "subject_value": subject_value,
            "services": services or [],
            "dry_run": dry_run,
        }
        if reason is not None:
            body["reason"] = reason
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        result: dict[str, Any] = self._call("POST", "/v1/jobs", json=body, headers=headers)
        return result

    def get(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/v1/jobs/{job_id}")
        return result

    def wait(self, job_id: str, timeout: float = 600.0, poll: float = 0.5) -> dict[str, Any]:
        """The job once it is terminal; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job["status"] in TERMINAL:
                return job
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:g}s")
            time.sleep(poll)

    def retry(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/v1/jobs/{job_id}/retry")
        return result

    def cancel(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/v1/jobs/{job_id}/cancel")
        return result

    def certificate(self, job_id: str) -> dict[str, Any]:
        """The certificate's readable view: ``certificate`` (the compact JWS to keep and
        verify), ``header`` and ``claims``."""
        result: dict[str, Any] = self._call(
            "GET", f"/v1/jobs/{job_id}/certificate", headers={"Accept": "application/json"}
        )
        return result


def submit_via_celery(app: Celery, request: ErasureRequest) -> str:
    """Send ``request`` as a plain Celery message; returns the message's task id (the
    job id comes back as the task's result, if the caller keeps results)."""
    result = app.send_task(
        "eraser.submit_request",
        kwargs=request.model_dump(),
        queue="eraser.requests",
        # Flower and worker logs show these instead of the arguments.
        argsrepr="()",
        kwargsrepr="{...}",
    )
    return str(result.id)
