"""The job page's certificate check, in process (SQLite job store): the certificate
served now verifies with the published keys; a pasted one is checked against them and
against the job record, through a key rotation, an altered token, another job's
certificate and a record that no longer matches."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from api import certificates
from api.console.certificates import check_pasted, check_served
from models import migrate
from models.keyring import new_signing_key, public_part
from models.messages import ErasureRequest
from models.registry import Registry, load_registry
from models.settings import PublicKeys, Settings
from models.store.database import JobStore
from models.store.tables import Job, JobStatus, Task, TaskStatus
from tasks.submit import submit
from worker.database import create_engine

REGISTRY = """
[subjects.tenant]
column = "tenant_id"
[services.shop]
url_env = "SHOP_URL"
"""
DONE = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    engine = create_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    migrate.upgrade(engine)
    yield JobStore(engine)
    engine.dispose()


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    (tmp_path / "services.toml").write_text(REGISTRY, encoding="utf-8")
    return load_registry(tmp_path / "services.toml")


def erased(store: JobStore, registry: Registry, value: str, rows: int = 4) -> str:
    """A real erasure that succeeded, removing ``rows`` rows."""
    job, _ = submit(store, registry, ErasureRequest(subject_kind="tenant", subject_value=value))
    tables = [{"table": "main.customers", "action": "delete", "rows": rows}]
    with store.transaction() as session:
        session.execute(
            sa.update(Task)
            .where(Task.job_id == job.id)
            .values(
                status=TaskStatus.SUCCEEDED,
                rows=tables,
                total_rows=rows,
                verified=True,
                started_at=DONE,
                finished_at=DONE,
            )
        )
        session.execute(
            sa.update(Job)
            .where(Job.id == job.id)
            .values(status=JobStatus.SUCCEEDED, total_rows=rows, finished_at=DONE)
        )
    return job.id


def signing(private: dict[str, Any], *retired: dict[str, Any]) -> Settings:
    """Settings that sign with ``private`` and also publish the ``retired`` keys."""
    return Settings(
        certificate_signing_key=SecretStr(json.dumps(private)),
        certificate_public_keys=PublicKeys(keys=list(retired)),
    )


def test_the_served_certificate_verifies_with_the_current_key(
    store: JobStore, registry: Registry
) -> None:
    key = new_signing_key()
    job_id = erased(store, registry, "t1")
    check = check_served(store, signing(key), job_id)
    assert check.verified
    assert check.kid == key["kid"]
    assert not check.retired


def test_a_pasted_certificate_through_a_key_rotation(store: JobStore, registry: Registry) -> None:
    old, new = new_signing_key(), new_signing_key()
    job_id = erased(store, registry, "t1")
    token = certificates.certificate_of(store, signing(old), job_id)
    # Rotated, the old public key still published: verified with the retired key.
    kept = check_pasted(store, signing(new, public_part(old)), job_id, token)
    assert kept.verified
    assert (kept.kid, kept.retired) == (old["kid"], True)
    # The old key removed from the published keys: refused, saying which kid.
    dropped = check_pasted(store, signing(new), job_id, token)
    assert not dropped.verified
    assert dropped.reason == f"unknown kid {old['kid']!r}: no key of the JWKS has it"
    # The certificate served now is signed with the new key.
    assert check_served(store, signing(new), job_id).kid == new["kid"]


def test_an_altered_or_foreign_certificate_is_not_verified(
    store: JobStore, registry: Registry
) -> None:
    key = new_signing_key()
    settings = signing(key)
    job_id, other = erased(store, registry, "t1"), erased(store, registry, "t2")
    token = certificates.certificate_of(store, settings, job_id)
    head, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["total_rows"] = 0
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    altered = check_pasted(store, settings, job_id, f"{head}.{forged}.{signature}")
    assert not altered.verified
    assert altered.reason.startswith("bad signature: the certificate was altered")
    foreign = check_pasted(store, settings, other, token)
    assert foreign.reason == f"it certifies another job ({job_id})"
    assert not check_pasted(store, settings, job_id, "not a certificate").verified
    # The JSON view the API serves is accepted as well.
    view = json.dumps({"certificate": token})
    assert check_pasted(store, settings, job_id, view).verified


def test_a_certificate_that_no_longer_matches_the_record_is_not_verified(
    store: JobStore, registry: Registry
) -> None:
    settings = signing(new_signing_key())
    job_id = erased(store, registry, "t1")
    token = certificates.certificate_of(store, settings, job_id)
    with store.transaction() as session:
        session.execute(sa.update(Job).where(Job.id == job_id).values(total_rows=99))
    check = check_pasted(store, settings, job_id, token)
    assert not check.verified
    assert check.reason == "its claims differ from the job record: total_rows"


def test_without_a_finished_erasure_the_reason_is_given(
    store: JobStore, registry: Registry
) -> None:
    job, _ = submit(store, registry, ErasureRequest(subject_kind="tenant", subject_value="t3"))
    check = check_served(store, signing(new_signing_key()), job.id)
    assert not check.verified
    assert check.reason.startswith("The job has not finished")
