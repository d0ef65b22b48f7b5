"""Erasure jobs through the real chord: worker processes, Redis, PostgreSQL, MariaDB."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from pathlib import Path

import sqlalchemy as sa

from models.messages import ErasureRequest
from models.registry import load_registry
from models.store.tables import AuditEvent, Job, JobStatus
from tasks.submit import submit
from tests.e2e.conftest import OTHERS, SUBJECT, Deployment

SERVICES = ["--service", "orders", "--service", "inventory", "--service", "notify"]


def status_of(dep: Deployment, *args: str) -> dict:
    proc = dep.eraser("submit", "--subject-kind", "tenant", *args, "--wait", "--json")
    assert proc.stderr == "" or "error" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def test_dry_run_counts_exactly_and_changes_nothing(deployment: Deployment) -> None:
    before = deployment.estate.rows_of(SUBJECT)
    doc = status_of(deployment, "--subject", SUBJECT, *SERVICES, "--dry-run")
    assert doc["status"] == JobStatus.SUCCEEDED
    assert doc["dry_run"] is True
    per_service = {t["service"]: t["rows"] for t in doc["tasks"]}
    # 15 customers, 45 orders, 45 invoices | 15 products, 15 stock | 15 messages, 15 deliveries
    assert per_service == {"orders": 105, "inventory": 30, "notify": 30}
    assert doc["total_rows"] == 165
    assert deployment.estate.rows_of(SUBJECT) == before


def test_job_over_three_services_succeeds(deployment: Deployment) -> None:
    others_before = {t: deployment.estate.rows_of(t) for t in OTHERS}
    doc = status_of(deployment, "--subject", SUBJECT, *SERVICES, "--reason", "GDPR art. 17")
    assert doc["status"] == JobStatus.SUCCEEDED, doc
    tables = {
        (t["service"], row["table"]): row["rows"] for t in doc["tasks"] for row in t["tables"]
    }
    assert tables[("orders", "billing.invoices")] == 45
    assert tables[("orders", "public.orders")] == 45
    assert tables[("orders", "public.customers")] == 15
    assert tables[("notify", "public.deliveries")] == 15
    assert {t["service"]: t["verified"] for t in doc["tasks"]} == dict.fromkeys(
        ("inventory", "notify", "orders"), True
    )
    left = deployment.estate.rows_of(SUBJECT)
    assert all(rows == [] for rows in left.values()), left
    assert {t: deployment.estate.rows_of(t) for t in OTHERS} == others_before
    with deployment.store.transaction() as session:
        kinds = list(
            session.scalars(sa.select(AuditEvent.kind).where(AuditEvent.job_id == doc["id"]))
        )
    assert kinds == ["job.submitted", "job.finished"]

    # The status command reads the same record.
    shown = json.loads(deployment.eraser("status", doc["id"], "--json").stdout)
    assert shown["status"] == "succeeded"
    assert shown["total_rows"] == doc["total_rows"] == 165


def test_a_failing_service_leaves_the_job_partially_failed(deployment: Deployment) -> None:
    doc = status_of(
        deployment, "--subject", "globex-77", "--service", "broken", "--service", "notify"
    )
    assert doc["status"] == JobStatus.PARTIALLY_FAILED, doc
    tasks = {t["service"]: t for t in doc["tasks"]}
    assert tasks["broken"]["status"] == "failed"
    # A refused connection is transient: retried (twice here), then dead-lettered.
    assert tasks["broken"]["error"] == (
        "lost or refused database connection (OperationalError) (gave up after 2 retries)"
    )
    assert [a["outcome"] for a in tasks["broken"]["history"]] == ["retry", "retry", "failed"]
    letters = json.loads(deployment.eraser("dead-letters", "list", "--json").stdout)
    mine = [d for d in letters if d["job_id"] == doc["id"]]
    assert [(d["service"], d["reason"]) for d in mine] == [("broken", "retries_exhausted")]
    assert "wrong-secret-pw" not in json.dumps(doc)
    assert tasks["notify"]["status"] == "succeeded"
    assert tasks["notify"]["rows"] == 30  # the chord body ran and recorded it
    assert doc["total_rows"] == 30


def test_the_same_idempotency_key_submitted_concurrently_yields_one_job(
    deployment: Deployment,
) -> None:
    registry = load_registry(deployment.registry_path)
    request = ErasureRequest(
        subject_kind="tenant",
        subject_value="initech-31",
        services=["notify"],
        dry_run=True,
        idempotency_key="same-key-twice",
    )
    barrier = threading.Barrier(4)
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            barrier.wait()
            job, created = submit(deployment.store, registry, request)
            results.append((job.id, created))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert len({job_id for job_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    with deployment.store.transaction() as session:
        count = session.scalar(
            sa.select(sa.func.count())
            .select_from(Job)
            .where(Job.idempotency_key == "same-key-twice")
        )
    assert count == 1

    # Through the CLI, a different body under the same key is refused.
    proc = deployment.eraser(
        "submit",
        "--subject-kind",
        "tenant",
        "--subject",
        "someone-else",
        "--service",
        "notify",
        "--dry-run",
        "--idempotency-key",
        "same-key-twice",
    )
    assert proc.returncode == 2
    assert "idempotency key already used" in proc.stderr


_BODY = re.compile(r'body\\?"\s*:\s*\\?"([A-Za-z0-9+/=]{8,})')


def test_no_subject_value_or_dsn_in_messages_results_or_logs(deployment: Deployment) -> None:
    # Runs last in this module: every job above has gone through the broker by now.
    status_of(deployment, "--subject", "initech-31", "--service", "inventory", "--dry-run")
    traffic = "\n".join(deployment.captured)
    assert "eraser.erase_service" in traffic  # the monitor really saw the messages
    decoded = []
    for match in _BODY.finditer(traffic):
        try:
            decoded.append(base64.b64decode(match.group(1)).decode("utf-8", "replace"))
        except ValueError:
            continue
    # The decoded bodies hold the task arguments: opaque ids (job id, service name).
    uuid_and_service = re.compile(r'\[\["[0-9a-f-]{36}", "inventory"\]')
    assert any(uuid_and_service.search(d) for d in decoded), decoded[:3]
    haystacks = {
        "broker traffic": traffic,
        "message bodies": "\n".join(decoded),
        "worker log": deployment.worker_log(),
    }
    secrets = [SUBJECT, *OTHERS, "wrong-secret-pw"] + [
        sa.make_url(dsn).render_as_string(hide_password=False) for dsn in deployment.dsns
    ]
    for where, text in haystacks.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} found in {where}"


def test_the_worker_keeps_its_liveness_file_fresh(deployment: Deployment) -> None:
    path = Path(deployment.env["ERASER_LIVENESS_FILE"])
    first = path.read_text()
    time.sleep(1.2)
    assert path.read_text() != first  # it beats
    check = deployment.eraser("health", "worker", "--max-age", "5")
    assert check.returncode == 0, check.stdout
    assert check.stdout.startswith("healthy")
    stale = path.with_name("stale.alive")
    stale.write_text(f"{time.time() - 120:.3f}\n")
    answer = deployment.eraser("health", "worker", "--file", str(stale), "--max-age", "60")
    assert answer.returncode == 1
    assert re.match(r"unhealthy: last beat 12\d+s ago \(max 60s\)", answer.stdout)
    missing = deployment.eraser("health", "worker", "--file", str(path.with_name("none")))
    assert missing.returncode == 1


def test_worker_logs_are_json_with_job_and_service(deployment: Deployment) -> None:
    doc = status_of(deployment, "--subject", "initech-31", "--service", "notify", "--dry-run")
    assert doc["status"] == JobStatus.SUCCEEDED
    time.sleep(0.5)
    lines = [json.loads(line) for line in deployment.worker_log().splitlines() if line[:1] == "{"]
    assert lines
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    mine = [
        line
        for line in lines
        if line.get("job_id") == doc["id"] and line.get("task") == "eraser.erase_service"
    ]
    assert mine
    assert {line["service"] for line in mine} == {"notify"}
