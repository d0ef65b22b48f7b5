"""The HTTP API's client: submit, read, wait for, retry and cancel jobs, fetch
certificates. Errors come back as ``EraserApiError`` carrying the problem document."""

from __future__ import annotations

import time
from typing import Any

import httpx

#: Job statuses after which nothing changes any more.
TERMINAL = frozenset({"succeeded", "partially_failed", "failed", "cancelled"})


class EraserApiError(Exception):
    """The API answered with a problem document (RFC 9457)."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        detail = problem.get("detail") or problem.get("title") or "error"
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.problem = problem


class EraserClient:
    """One API key against one Eraser; use as a context manager (or ``close()``)."""

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

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        answer = self._http.request(method, path, **kwargs)
        if answer.status_code >= 400:
            try:
                problem = answer.json()
            except ValueError:
                problem = {"title": answer.text[:200]}
            raise EraserApiError(answer.status_code, problem)
        document: dict[str, Any] = answer.json()
        return document

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
        return self._call("POST", "/v1/jobs", json=body, headers=headers)

    def get(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}")

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
        return self._call("POST", f"/v1/jobs/{job_id}/retry")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel")

    def certificate(self, job_id: str) -> dict[str, Any]:
        """The certificate's readable view: ``certificate`` (the compact JWS to keep and
        verify), ``header`` and ``claims``."""
        return self._call(
            "GET", f"/v1/jobs/{job_id}/certificate", headers={"Accept": "application/json"}
        )
