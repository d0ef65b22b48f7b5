"""A service that erases its own data (``kind = "http"``), asked through a signed protocol.

Eraser POSTs ``{job_id, subject_kind, subject_value, dry_run}`` to ``{base}/erasures``,
signed as a Standard Webhooks request (HMAC-SHA256 over ``id.timestamp.body`` with the
service's secret; headers ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``).
The service answers ``200`` with ``{status: "done", counts, verified}``, or ``202`` while
it works; Eraser then polls ``GET {base}/erasures/{job_id}`` (signed over the job id in
place of a body) with doubling pauses. After ``wait_seconds`` the execution ends its
time slice (``SliceEnded``) and the task asks again in a new delivery: the job id makes
the request idempotent, so the service answers about the same erasure.

``4xx`` is permanent (``StoreRefused``: dead letter); ``5xx``, timeouts and connection
failures are transient (``StoreUnavailable``: retried). A ``404`` while polling means the
service forgot the erasure (a restart): it is asked again. The subject's value goes
only into the signed body; errors name the service, the method and the status code.
"""

from __future__ import annotations

import binascii
import json
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import standardwebhooks

from models.erasure import ErasureReport, TableAction, TableOutcome
from models.registry import HttpService
from worker.execution.options import ProgressCallback, SliceEnded
from worker.stores.base import Store, announce
from worker.stores.exceptions import (
    InvalidStoreSecret,
    InvalidStoreUrl,
    StoreRefused,
    StoreUnavailable,
)

#: The first pause between two polls; each next one doubles, up to ``poll_max_seconds``.
#: What of a failed erasure's ``error`` is kept: a name (an exception's class).
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,79}")
FIRST_POLL_SECONDS = 0.25


def signed_headers(signer: standardwebhooks.Webhook, payload: bytes) -> dict[str, str]:
    """The Standard Webhooks headers for ``payload`` (a fresh message id each time)."""
    message_id = f"msg_{uuid.uuid4().hex}"
    now = datetime.now(tz=UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signer.sign(message_id, now, payload),
    }


class HttpStore(Store):
    """One subject's data in a service that erases it itself."""

    kind = "http"

    def __init__(
        self,
        name: str,
        service: HttpService,
        url: str,
        secret: str,
        *,
        subject_kind: str = "",
        job_id: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise InvalidStoreUrl(service.url_env, "http(s)://host[:port][/base]")
        try:
            self.signer = standardwebhooks.Webhook(secret)
        except (binascii.Error, ValueError, standardwebhooks.webhooks.EmptyWebhookSecretError):
            raise InvalidStoreSecret(service.secret_env) from None
        super().__init__(name, [], {"url_env": service.url_env})
        self.service = service
        self.base = url.rstrip("/")
        self.subject_kind = subject_kind
        self.job_id = job_id
        self.client = httpx.Client(timeout=service.timeout_seconds, follow_redirects=False)

    def close(self) -> None:
        self.client.close()

    def preview(self, subject: str) -> ErasureReport:
        return self._ask(subject, dry_run=True, job_id=self.job_id or uuid.uuid4().hex)

    def erase(
        self,
        subject: str,
        progress: ProgressCallback | None = None,
        *,
        erasure_id: str | None = None,
    ) -> ErasureReport:
        started = time.monotonic()
        report = self._ask(subject, dry_run=False, job_id=self.job_id or erasure_id)
        totals: dict[str, int] = {}
        for table in report.tables:
            totals[table.table] = table.rows
            announce(progress, table.table, table.rows, totals, started)
        return report

    def verify(self, subject: str) -> int:
        """What a fresh dry run (a job id of its own) counts."""
        return self._ask(subject, dry_run=True, job_id=uuid.uuid4().hex).total_rows

    # --- the protocol ----------------------------------------------------------------------

    def _ask(self, subject: str, *, dry_run: bool, job_id: str | None) -> ErasureReport:
        """POST the erasure, then poll until it is done or ``wait_seconds`` have passed."""
        started = time.monotonic()
        job = job_id or uuid.uuid4().hex
        body = json.dumps(
            {
                "job_id": job,
                "subject_kind": self.subject_kind,
                "subject_value": subject,
                "dry_run": dry_run,
            }
        ).encode()
        answer = self._post(body)
        pause = FIRST_POLL_SECONDS
        deadline = started + self.service.wait_seconds
        while answer.get("status") not in {"done", "failed"}:
            if time.monotonic() + pause > deadline:
                raise SliceEnded([])  # continued in a new delivery, which asks again
            time.sleep(pause)
            pause = min(pause * 2, self.service.poll_max_seconds)
            polled = self._get(job)
            answer = self._post(body) if polled is None else polled
        if answer["status"] == "failed":
            self._failed(answer)
        return self._report(answer, dry_run, started)

    def _post(self, body: bytes) -> dict[str, Any]:
        headers = {"content-type": "application/json", **signed_headers(self.signer, body)}
        answer = self._send("POST", f"{self.base}/erasures", body, headers)
        if answer is None:  # only a GET's 404 is a forgotten job; never reached for a POST
            raise StoreRefused(self.name, self.kind, "POST /erasures", "HTTP 404")
        return answer

    def _get(self, job: str) -> dict[str, Any] | None:
        """The erasure's state; None when the service does not know the job (any more)."""
        headers = signed_headers(self.signer, job.encode())
        url = f"{self.base}/erasures/{quote(job, safe='')}"
        return self._send("GET", url, None, headers)

    def _send(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str]
    ) -> dict[str, Any] | None:
        operation = f"{method} /erasures"
        try:
            response = self.client.request(method, url, content=body, headers=headers)
        except httpx.TransportError as exc:  # refused, reset, timed out
            raise StoreUnavailable(self.name, self.kind, type(exc).__name__) from None
        status = response.status_code
        if status == 404 and method == "GET":
            return None
        if status >= 500 or status == 429:
            raise StoreUnavailable(self.name, self.kind, f"{operation} answered {status}")
        if status not in {200, 202}:
            raise StoreRefused(self.name, self.kind, operation, f"HTTP {status}")
        try:
            answer = response.json()
        except ValueError:
            raise StoreRefused(self.name, self.kind, operation, "a body that is not JSON") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("status"), str):
            raise StoreRefused(self.name, self.kind, operation, "an answer without status")
        return answer

    def _failed(self, answer: dict[str, Any]) -> None:
        """The service's erasure failed: retried when the service says it may pass later."""
        # The router sends the exception's class name; another implementation could
        # send text that quotes the subject: only a name-like word is kept.
        said = str(answer.get("error") or "")
        error = said if _NAME.fullmatch(said) else "an error (its text is not kept)"
        if answer.get("transient"):
            raise StoreUnavailable(self.name, self.kind, f"the erasure failed with {error}")
        raise StoreRefused(self.name, self.kind, "the erasure", error)

    def _report(self, answer: dict[str, Any], dry_run: bool, started: float) -> ErasureReport:
        counts = answer.get("counts")
        if not isinstance(counts, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts.values()
        ):
            raise StoreRefused(self.name, self.kind, "the erasure", "counts that are not numbers")
        tables = [
            TableOutcome(table=str(t), action=TableAction.DELETE, rows=n)
            for t, n in counts.items()
            if n
        ]
        return ErasureReport(
            dry_run=dry_run,
            tables=tables,
            total_rows=sum(t.rows for t in tables),
            verified=answer.get("verified") is True,
            schema_fingerprint=self.fingerprint,
            elapsed_seconds=time.monotonic() - started,
        )
