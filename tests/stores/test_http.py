"""The http kind against a real service (uvicorn running ``erasure_router`` over its own
database): what goes, what stays byte-identical, the signature's checks, idempotency,
polling, and how each answer is classified."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import standardwebhooks
from eraser_client import ErasureRequest, ErasureResult, erasure_router
from fastapi import FastAPI

from api.routes.services import services
from models.registry import HttpService, RegistryError, load_registry
from tests.stores.http_service import HttpService as ServiceProcess
from tests.stores.http_service import new_secret, rows_of
from worker.execution.options import Progress, SliceEnded
from worker.faults import FaultKind, classify
from worker.stores import HttpStore, open_store
from worker.stores.exceptions import InvalidStoreSecret, StoreRefused, StoreUnavailable
from worker.stores.http import signed_headers

#: acme has 20 accounts with two notes each.
ACME = {"main.accounts": 20, "main.notes": 40}


def definition(**extra: object) -> HttpService:
    return HttpService.model_validate(
        {"kind": "http", "url_env": "BILLING_URL", "secret_env": "BILLING_SECRET", **extra}
    )


def store(service: ServiceProcess, job_id: str = "job-1", **extra: object) -> HttpStore:
    return HttpStore(
        "billing",
        definition(**extra),
        service.url,
        service.secret,
        subject_kind="tenant",
        job_id=job_id,
    )


def counts(report: object) -> dict[str, int]:
    return {t.table: t.rows for t in report.tables}  # type: ignore[attr-defined]


def test_erasure_removes_the_subject_and_counts_what_the_dry_run_counted(
    http_service: ServiceProcess,
) -> None:
    db = http_service.database_url
    others = {t: rows_of(db, t) for t in ("acme2", "globex")}
    with store(http_service, "dry-1") as dry:
        preview = dry.preview("acme")
    assert preview.dry_run
    assert counts(preview) == ACME
    assert len(rows_of(db, "acme")) == 60  # the dry run removed nothing

    heard: list[Progress] = []
    with store(http_service, "job-1") as real:
        report = real.erase("acme", heard.append, erasure_id="job-1:billing")
        assert real.verify("acme") == 0
    assert not report.dry_run
    assert report.verified
    assert counts(report) == counts(preview)
    assert report.total_rows == 60
    assert heard[-1].total_rows == 60
    assert rows_of(db, "acme") == []
    # "acme2" starts with "acme": nothing of it, nor of globex, changed
    assert {t: rows_of(db, t) for t in ("acme2", "globex")} == others
    # the subject's value never reached the service's log
    assert "acme" not in http_service.log.read_text(encoding="utf-8").replace("acme2", "")


def test_the_same_job_asked_again_answers_the_same_erasure(http_service: ServiceProcess) -> None:
    with store(http_service, "job-7") as first:
        report = first.erase("globex")
    with store(http_service, "job-7") as again:  # a redelivery after a lost answer
        repeated = again.erase("globex")
    assert counts(repeated) == counts(report) == {"main.accounts": 10, "main.notes": 20}
    # another request under the same job id is refused: 409, permanent
    with store(http_service, "job-7") as other, pytest.raises(StoreRefused, match="HTTP 409"):
        other.erase("acme")


def test_503_is_retried_and_400_is_permanent(http_service: ServiceProcess) -> None:
    http_service.inject("503")
    with store(http_service) as s, pytest.raises(StoreUnavailable, match="answered 503") as info:
        s.erase("acme")
    assert classify(info.value).kind is FaultKind.TRANSIENT
    with store(http_service) as s:  # the retry: same job, exact counts
        assert counts(s.erase("acme")) == ACME

    http_service.inject("400")
    with store(http_service, "job-2") as s, pytest.raises(StoreRefused, match="HTTP 400") as ref:
        s.erase("globex")
    assert classify(ref.value).kind is FaultKind.PERMANENT
    assert "globex" not in str(ref.value)


def test_a_slow_erasure_is_polled_and_a_long_one_ends_the_slice(
    http_service: ServiceProcess,
) -> None:
    http_service.inject("slow")
    with store(http_service, "job-slow", wait_seconds=0.5) as s, pytest.raises(SliceEnded):
        s.erase("acme")
    # the next delivery asks again under the same job id and waits for the same erasure
    with store(http_service, "job-slow", poll_max_seconds=0.2) as s:
        report = s.erase("acme")
    assert counts(report) == ACME


def test_a_restarted_service_is_asked_again(http_service: ServiceProcess) -> None:
    with store(http_service, "job-r") as s:
        s.erase("globex")
    http_service.stop()
    with store(http_service, "job-r") as s, pytest.raises(StoreUnavailable):
        s.erase("globex")  # connection refused: transient
    http_service.start()
    # the service forgot the job: asked again, it finds nothing left, and says so
    with store(http_service, "job-r") as s:
        report = s.erase("globex")
    assert report.verified
    assert report.total_rows == 0


def test_a_wrong_secret_is_refused(http_service: ServiceProcess) -> None:
    s = HttpStore("billing", definition(), http_service.url, new_secret(), subject_kind="tenant")
    with s, pytest.raises(StoreRefused, match="HTTP 401") as info:
        s.erase("acme")
    assert http_service.secret.removeprefix("whsec_") not in str(info.value)
    assert len(rows_of(http_service.database_url, "acme")) == 60


def _body(job: str = "j", value: str = "acme") -> bytes:
    return json.dumps(
        {"job_id": job, "subject_kind": "tenant", "subject_value": value, "dry_run": True}
    ).encode()


def test_the_signature_is_checked(http_service: ServiceProcess) -> None:
    signer = standardwebhooks.Webhook(http_service.secret)
    url = f"{http_service.url}/erasures"
    body = _body()
    # a stale timestamp (a replay ten minutes later)
    old = datetime.now(tz=UTC) - timedelta(minutes=10)
    stale = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(old.timestamp())),
        "webhook-signature": signer.sign("msg_1", old, body),
    }
    assert httpx.post(url, content=body, headers=stale).status_code == 401
    # a body changed after signing
    headers = signed_headers(signer, body)
    assert httpx.post(url, content=_body(value="globex"), headers=headers).status_code == 401
    # no signature at all
    assert httpx.post(url, content=body).status_code == 401
    # a GET signed for another job
    assert httpx.get(f"{url}/j", headers=signed_headers(signer, b"other")).status_code == 401
    # signed right: accepted; a malformed body is refused without echoing it
    assert httpx.post(url, content=body, headers=signed_headers(signer, body)).status_code in {
        200,
        202,
    }
    bad = json.dumps({"job_id": "k", "subject_kind": "tenant", "subject_value": 5}).encode()
    answer = httpx.post(url, content=bad, headers=signed_headers(signer, bad))
    assert answer.status_code == 400
    assert "subject_value" in answer.text
    assert "5" not in answer.text
    assert httpx.get(f"{url}/nope", headers=signed_headers(signer, b"nope")).status_code == 404


def _call(app: FastAPI, method: str, path: str, body: bytes, signer: object) -> httpx.Response:
    """One signed request to ``app`` in-process (a POST signs its body, a GET the job id)."""
    payload = body if method == "POST" else path.rsplit("/", 1)[-1].encode()
    headers = signed_headers(signer, payload)  # type: ignore[arg-type]

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
            return await http.request(method, path, content=body or None, headers=headers)

    return asyncio.run(send())


def test_router_refusals_and_failures_without_the_value() -> None:
    """The router alone (no server): unknown kinds, and a failing erase reported by class
    name with its kind (transient or not), never its message."""
    secret = new_secret()

    def erase(request: ErasureRequest) -> ErasureResult:
        if request.subject_value == "flaky":
            raise ConnectionError(f"lost while erasing {request.subject_value}")
        raise RuntimeError(f"cannot erase {request.subject_value}")

    app = FastAPI()
    app.include_router(erasure_router(secret=secret, erase=erase, subject_kinds={"tenant"}))
    signer = standardwebhooks.Webhook(secret)
    body = json.dumps(
        {"job_id": "u", "subject_kind": "user", "subject_value": "x", "dry_run": False}
    ).encode()
    assert _call(app, "POST", "/erasures", body, signer).status_code == 422
    for job, value, transient in (("a", "flaky", True), ("b", "secret-tenant", False)):
        # the erase fails at once: the POST waits for it and answers its outcome
        answer = _call(app, "POST", "/erasures", _body(job, value), signer)
        assert (answer.status_code, answer.json()["status"]) == (200, "failed")
        for _ in range(100):
            state = _call(app, "GET", f"/erasures/{job}", b"", signer)
            if state.json()["status"] != "running":
                break
            time.sleep(0.02)
        assert state.json()["status"] == "failed"
        assert state.json()["transient"] is transient
        assert value not in state.text
    with pytest.raises(ValueError, match="base64"):
        erasure_router(secret="not base64!", erase=erase)  # noqa: S106 - not a real secret


def test_an_unverified_erasure_runs_again_when_asked_again() -> None:
    """Eraser retries an erasure that left some of the subject: the repeated request runs
    it again (its counts are what the second run removed), where a verified one is
    answered as it was."""
    runs: list[int] = []

    def erase(request: ErasureRequest) -> ErasureResult:
        runs.append(1)
        return ErasureResult(counts={"rows": 5 if len(runs) == 1 else 2}, verified=len(runs) > 1)

    secret = new_secret()
    app = FastAPI()
    app.include_router(erasure_router(secret=secret, erase=erase))
    signer = standardwebhooks.Webhook(secret)
    body = json.dumps(
        {"job_id": "v", "subject_kind": "tenant", "subject_value": "x", "dry_run": False}
    ).encode()
    answers = [_call(app, "POST", "/erasures", body, signer).json() for _ in range(3)]
    assert [(a["counts"], a["verified"]) for a in answers] == [
        ({"rows": 5}, False),
        ({"rows": 2}, True),
        ({"rows": 2}, True),
    ]
    assert len(runs) == 2


def test_a_run_no_answer_told_is_counted_with_the_next() -> None:
    """A run that ended unverified before Eraser polled it (its slice ended while it
    waited) is replaced by the next request's run: that run's answer carries both runs'
    rows, so none of them goes uncounted; rows an answer already told are not repeated."""
    from eraser_client.erasures import ErasureBook  # noqa: PLC0415

    release = [threading.Event(), threading.Event(), threading.Event()]
    removed = iter([5, 2, 1])

    def erase(_request: ErasureRequest) -> ErasureResult:
        release.pop(0).wait(10)
        return ErasureResult(counts={"rows": next(removed)}, verified=False)

    book = ErasureBook(erase)
    request = ErasureRequest("w", "tenant", "x", dry_run=False)
    first_events = list(release)
    assert book.start(request)["status"] == "running"
    first_events[0].set()
    time.sleep(0.2)  # the first run ends unverified; nobody asks for its outcome
    assert book.start(request)["status"] == "running"  # a second run, told nothing yet
    first_events[1].set()
    told = book.wait("w", 5)
    assert told is not None
    assert told["counts"] == {"rows": 7}
    assert book.start(request)["status"] == "running"  # a third run: 7 rows were told
    first_events[2].set()
    third = book.wait("w", 5)
    assert third is not None
    assert third["counts"] == {"rows": 1}


def test_registry_entries_and_their_errors(tmp_path: Path) -> None:
    head = '[subjects.tenant]\ncolumn = "tenant_id"\n[subjects.user]\ncolumn = "user_id"\n'
    good = head + '[services.billing]\nkind = "http"\nurl_env = "B_URL"\nsecret_env = "B_SECRET"\n'
    path = tmp_path / "services.toml"
    path.write_text(good, encoding="utf-8")
    registry = load_registry(path)
    billing = registry.services["billing"]
    assert isinstance(billing, HttpService)
    # told the kind, an http service needs no `subjects` in a registry of several kinds
    assert registry.kinds_for("billing") == ["tenant", "user"]
    view = services(None, registry)  # type: ignore[arg-type]  # GET /v1/services, no key
    assert (view[0].name, view[0].kind, view[0].batch_size) == ("billing", "http", 0)
    for old, new, message in (
        ('secret_env = "B_SECRET"\n', "", "billing: Value error, an http service needs secret_env"),
        ('url_env = "B_URL"\n', "", "billing: Value error, an http service needs url_env"),
        ('"B_SECRET"', '"whsec_abc="', "billing.secret_env: Value error, must be the NAME"),
        ('"B_SECRET"\n', '"B_SECRET"\nkeys = ["a:{value}"]\n', "billing.keys: Extra inputs"),
    ):
        path.write_text(good.replace(old, new), encoding="utf-8")
        with pytest.raises(RegistryError, match=message):
            load_registry(path)


def test_urls_and_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_URL", "http://127.0.0.1:1")
    monkeypatch.delenv("BILLING_SECRET", raising=False)
    with pytest.raises(InvalidStoreSecret, match="BILLING_SECRET must hold a base64"):
        open_store("billing", definition())
    monkeypatch.setenv("BILLING_SECRET", "%%%not-base64%%%")
    with pytest.raises(InvalidStoreSecret) as info:
        open_store("billing", definition())
    assert "%%%" not in str(info.value)
    monkeypatch.setenv("BILLING_SECRET", new_secret())
    with open_store("billing", definition(), subject_kind="tenant") as s:
        assert isinstance(s, HttpStore)
        with pytest.raises(StoreUnavailable, match="ConnectError"):
            s.preview("acme")


def test_the_client_imports_neither_fastapi_nor_eraser_until_asked() -> None:
    """``import eraser_client`` stays httpx-only; the router brings FastAPI, never
    Eraser's server packages; the engine's helper imports them only when called."""
    script = (
        "import sys, eraser_client\n"
        "print(sorted(m for m in ('fastapi', 'standardwebhooks', 'models', 'worker')"
        " if m in sys.modules))\n"
        "from eraser_client import engine_erasure, erasure_router\n"
        "print(sorted(m for m in ('fastapi', 'models', 'worker') if m in sys.modules))\n"
    )
    src = Path(__file__).resolve().parents[2] / "deploy" / "client" / "src"
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(src)},
    )
    assert done.stdout.splitlines() == ["[]", "['fastapi']"]


def test_a_failed_erasures_text_is_kept_only_as_a_name() -> None:
    """The router answers a failure with the exception's class name; a service that
    answers with a sentence (which could quote the subject) has it dropped."""
    s = HttpStore("billing", definition(), "http://127.0.0.1:9", new_secret(), job_id="j")
    try:
        with pytest.raises(StoreRefused) as named:
            s._failed({"status": "failed", "error": "IntegrityError"})
        assert "IntegrityError" in str(named.value)
        with pytest.raises(StoreRefused) as said:
            s._failed({"status": "failed", "error": "cannot erase tenant acme-4711"})
        assert "acme-4711" not in str(said.value)
        with pytest.raises(StoreUnavailable) as later:
            s._failed({"status": "failed", "error": "lost acme-4711", "transient": True})
        assert "acme-4711" not in str(later.value)
    finally:
        s.close()
