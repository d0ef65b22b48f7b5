"""Erasure certificates: Ed25519 compact JWS, checked with an independent JOSE library
(jwcrypto) against the JWKS the real app serves, after a real erasure (SQLite job
store and target, no broker)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from jwcrypto import jwk, jws
from jwcrypto.common import JWException

from api import certificates
from api.cli import main
from api.http import create_app
from api.keys import Scope, create_key
from models import migrate
from models.certificate import FORMAT, InvalidCertificate
from models.keyring import (
    SECRET_VARIABLES,
    MissingSecrets,
    keyring,
    new_secrets,
    require_secrets,
)
from models.messages import ErasureRequest
from models.registry import load_registry
from models.settings import Settings
from models.store.database import JobStore
from models.store.sealing import subject_seal
from models.store.tables import Task
from tasks.erase import execute_task
from tasks.finalize import finalize
from tasks.submit import submit
from worker.database import create_engine

#: A JWS header of an HMAC algorithm (algorithm confusion: must be refused).
HS256 = b'{"alg":"HS256","kid":"k"}'
#: A JWS header without a ``kid``.
NO_KID = b'{"alg":"EdDSA"}'
#: Tenant 1 owns 5 customers and 15 orders; tenant 99 owns nothing.
TENANT, NOBODY = "1", "99"


class AppClient:
    """The real app over ASGI, called synchronously (no server, no lifespan needed)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://eraser") as http:
                return await http.get(path, headers=headers)

        return asyncio.run(call())


@dataclass
class Deployment:
    client: AppClient
    settings: Settings
    secrets: dict[str, str]
    reader: dict[str, str]
    #: Job ids: an erasure that removed rows, one that matched nothing, one unfinished.
    erased: str
    nothing: str
    unfinished: str
    tmp: Path


def deployment_settings(env: dict[str, str], **extra: Any) -> Settings:
    return Settings(
        broker_url="redis://127.0.0.1:1/0",  # a deployment: secrets are required
        certificate_signing_key=env["ERASER_CERTIFICATE_SIGNING_KEY"],
        subject_hash_pepper=env["ERASER_SUBJECT_HASH_PEPPER"],
        job_store_encryption_key=env["ERASER_JOB_STORE_ENCRYPTION_KEY"],
        **extra,
    )


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    (tmp_path / "services.toml").write_text(
        '[subjects.tenant]\ncolumn = "tenant_id"\n[services.shop]\nurl_env = "SHOP_URL"\n',
        encoding="utf-8",
    )
    conn = sqlite3.connect(tmp_path / "shop.db")
    conn.executescript(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL);"
        "CREATE TABLE orders (id INTEGER PRIMARY KEY,"
        " customer_id INTEGER NOT NULL REFERENCES customers(id));"
    )
    conn.executemany("INSERT INTO customers VALUES (?, ?)", [(i, 1 + i % 2) for i in range(10)])
    conn.executemany("INSERT INTO orders VALUES (?, ?)", [(i, i % 10) for i in range(30)])
    conn.commit()
    conn.close()
    engine = create_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    migrate.upgrade(engine)
    shop = create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
    registry = load_registry(tmp_path / "services.toml")
    key = create_key("reader", [Scope.READ])
    env = new_secrets()
    settings = deployment_settings(env, api_keys=[key.entry])
    store = JobStore(engine, subject_seal(settings))
    jobs = []
    for value in (TENANT, NOBODY):
        job, _ = submit(store, registry, ErasureRequest(subject_kind="tenant", subject_value=value))
        outcome = execute_task(
            store, registry, settings, job.id, "shop", engine_for=lambda _s: shop
        )
        assert outcome.result.status == "succeeded"
        finalize(store, job.id)
        jobs.append(job.id)
    pending, _ = submit(store, registry, ErasureRequest(subject_kind="tenant", subject_value="2"))
    yield Deployment(
        client=AppClient(create_app(settings, store, registry)),
        settings=settings,
        secrets=env,
        reader={"Authorization": f"Bearer {key.secret}"},
        erased=jobs[0],
        nothing=jobs[1],
        unfinished=pending.id,
        tmp=tmp_path,
    )
    engine.dispose()
    shop.dispose()


def token_of(d: Deployment, job_id: str) -> str:
    answer = d.client.get(f"/v1/jobs/{job_id}/certificate", headers=d.reader)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/jose"
    return answer.text


def served_jwks(d: Deployment) -> dict[str, Any]:
    answer = d.client.get("/.well-known/jwks.json")  # no Authorization header
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/jwk-set+json"
    return dict(answer.json())


def jwcrypto_verify(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """What a third party does with a stock library: find the key by kid, verify."""
    keys = jwk.JWKSet.from_json(json.dumps(jwks))
    signed = jws.JWS()
    signed.deserialize(token)
    key = keys.get_key(signed.jose_header["kid"])
    if key is None:
        raise LookupError(f"unknown kid {signed.jose_header['kid']}")
    signed.verify(key, alg="EdDSA")
    return dict(json.loads(signed.payload))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def tampered(token: str) -> str:
    """One more row in the first service's count; header and signature unchanged."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["services"][0]["rows"] += 1
    return ".".join([header, b64(json.dumps(claims).encode()), signature])


def signed_by(key: jwk.JWK, kid: str, claims: dict[str, Any]) -> str:
    """A certificate made by someone else's key (jwcrypto signs it)."""
    made = jws.JWS(json.dumps(claims).encode())
    made.add_signature(key, alg="EdDSA", protected={"alg": "EdDSA", "kid": kid})
    return str(made.serialize(compact=True))


# --- the certificate, verified by an independent library -------------------------------------


def test_a_certificate_verifies_with_jwcrypto_against_the_served_jwks(
    deployment: Deployment,
) -> None:
    token = token_of(deployment, deployment.erased)
    jwks = served_jwks(deployment)
    claims = jwcrypto_verify(token, jwks)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "EdDSA"
    assert header["kid"] == jwks["keys"][0]["kid"]
    assert all("d" not in k for k in jwks["keys"])  # never the private part

    assert claims["format"] == FORMAT
    assert claims["job_id"] == deployment.erased
    assert claims["status"] == "succeeded"
    assert claims["subject_kind"] == "tenant"
    pepper = deployment.secrets["ERASER_SUBJECT_HASH_PEPPER"].encode()
    expected = hmac.new(pepper, b"tenant:1", hashlib.sha256).hexdigest()
    assert claims["subject_hash"] == f"hmac-sha256:{expected}"
    assert claims["subject_hash"] != hashlib.sha256(b"tenant:1").hexdigest()
    assert claims["total_rows"] == 20
    assert "dev" not in claims
    assert claims["eraser_version"] not in ("", "unknown")
    assert claims["finished_at"] >= claims["started_at"] >= claims["requested_at"]
    assert claims["verification"] == {"services": 1, "verified": 1, "nothing_matched": 0}
    (shop,) = claims["services"]
    assert shop["service"] == "shop"
    assert shop["verified"] is True
    assert shop["rows_left"] == 0
    assert shop["nothing_matched"] is False
    assert shop["schema_fingerprint"]
    assert {(t["table"].rsplit(".", 1)[-1], t["action"], t["rows"]) for t in shop["tables"]} == {
        ("customers", "delete", 5),
        ("orders", "delete", 15),
    }


def test_a_subject_with_no_rows_is_certified_as_nothing_matched(deployment: Deployment) -> None:
    claims = jwcrypto_verify(token_of(deployment, deployment.nothing), served_jwks(deployment))
    assert claims["total_rows"] == 0
    assert claims["services"][0]["nothing_matched"] is True
    assert claims["services"][0]["verified"] is True
    assert claims["verification"]["nothing_matched"] == 1


def test_jwcrypto_and_eraser_reject_a_tampered_payload(deployment: Deployment) -> None:
    jwks = served_jwks(deployment)
    forged = tampered(token_of(deployment, deployment.erased))
    with pytest.raises(JWException):
        jwcrypto_verify(forged, jwks)
    with pytest.raises(InvalidCertificate, match=r"^bad signature"):
        certificates.verify(forged, jwks)


def test_jwcrypto_and_eraser_reject_another_key_under_the_served_kid(
    deployment: Deployment,
) -> None:
    jwks = served_jwks(deployment)
    claims = jwcrypto_verify(token_of(deployment, deployment.erased), jwks)
    forged = signed_by(jwk.JWK.generate(kty="OKP", crv="Ed25519"), jwks["keys"][0]["kid"], claims)
    with pytest.raises(JWException):
        jwcrypto_verify(forged, jwks)
    with pytest.raises(InvalidCertificate, match=r"^bad signature"):
        certificates.verify(forged, jwks)


def test_jwcrypto_and_eraser_reject_an_unknown_kid(deployment: Deployment) -> None:
    jwks = served_jwks(deployment)
    claims = jwcrypto_verify(token_of(deployment, deployment.erased), jwks)
    forged = signed_by(jwk.JWK.generate(kty="OKP", crv="Ed25519"), "someone-else", claims)
    with pytest.raises(LookupError, match="unknown kid"):
        jwcrypto_verify(forged, jwks)
    with pytest.raises(InvalidCertificate, match=r"^unknown kid 'someone-else'"):
        certificates.verify(forged, jwks)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "malformed: not a compact JWS"),
        ("not.a.jws", "malformed: not a compact JWS"),
        (f"{b64(HS256)}.{b64(b'{}')}.{b64(b'x')}", "malformed: algorithm 'HS256', not EdDSA"),
        (f"{b64(NO_KID)}.{b64(b'{}')}.{b64(b'x')}", "malformed: the header names"),
    ],
)
def test_a_malformed_certificate_is_named_malformed(
    deployment: Deployment, token: str, reason: str
) -> None:
    with pytest.raises(InvalidCertificate, match=f"^{reason}"):
        certificates.verify(token, served_jwks(deployment))


def test_a_rotated_key_still_verifies_its_certificates(deployment: Deployment) -> None:
    """Sign, rotate to a new key with the old public key kept: both verify."""
    old_token = token_of(deployment, deployment.erased)
    old_jwks = served_jwks(deployment)
    fresh = new_secrets()
    rotated = deployment_settings(
        {
            **deployment.secrets,
            "ERASER_CERTIFICATE_SIGNING_KEY": fresh["ERASER_CERTIFICATE_SIGNING_KEY"],
        },
        certificate_public_keys=old_jwks,
    )
    jwks = certificates.public_key(rotated)
    assert [k["kid"] for k in jwks["keys"]][1:] == [old_jwks["keys"][0]["kid"]]
    assert jwcrypto_verify(old_token, jwks)["job_id"] == deployment.erased
    with pytest.raises(ValueError, match="public JWK"):
        Settings(
            certificate_public_keys={"keys": [json.loads(fresh["ERASER_CERTIFICATE_SIGNING_KEY"])]}
        )


# --- the HTTP surface ---------------------------------------------------------------------


def test_the_json_view_and_the_problems(deployment: Deployment) -> None:
    d = deployment
    view = d.client.get(
        f"/v1/jobs/{d.erased}/certificate", headers={**d.reader, "Accept": "application/json"}
    )
    assert view.status_code == 200
    assert view.headers["content-type"] == "application/json"
    body = view.json()
    assert body["certificate"] == token_of(d, d.erased)
    assert body["header"]["alg"] == "EdDSA"
    assert body["claims"]["job_id"] == d.erased

    assert d.client.get(f"/v1/jobs/{d.erased}/certificate").status_code == 401
    unfinished = d.client.get(f"/v1/jobs/{d.unfinished}/certificate", headers=d.reader)
    assert (unfinished.status_code, unfinished.json()["type"]) == (
        409,
        "urn:eraser:problem:job-not-finished",
    )
    missing = d.client.get("/v1/jobs/nope/certificate", headers=d.reader)
    assert missing.status_code == 404

    paths = d.client.get("/openapi.json").json()["paths"]
    content = paths["/v1/jobs/{job_id}/certificate"]["get"]["responses"]["200"]["content"]
    assert set(content) == {"application/jose", "application/json"}
    assert (
        "application/jwk-set+json"
        in paths["/.well-known/jwks.json"]["get"]["responses"]["200"]["content"]
    )


def test_embedded_mode_signs_with_a_marked_development_key(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'jobs.db'}")
    jwks = certificates.public_key(settings)
    assert jwks["keys"][0]["kid"].startswith("dev-")
    assert certificates.public_key(settings) == jwks  # derived, so every process agrees


# --- the CLI ------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_verify_accepts_a_good_certificate_and_rejects_bad_ones(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    d = deployment
    jwks = served_jwks(d)
    (d.tmp / "jwks.json").write_text(json.dumps(jwks), encoding="utf-8")
    good = token_of(d, d.erased)
    claims = jwcrypto_verify(good, jwks)
    stranger = jwk.JWK.generate(kty="OKP", crv="Ed25519")
    cases = {
        "good": (good, 0, "valid: job"),
        "tampered": (tampered(good), 1, "NOT valid: bad signature"),
        "wrong-key": (
            signed_by(stranger, jwks["keys"][0]["kid"], claims),
            1,
            "NOT valid: bad signature",
        ),
        "unknown-kid": (signed_by(stranger, "someone-else", claims), 1, "NOT valid: unknown kid"),
    }
    for name, (token, status, says) in cases.items():
        path = d.tmp / f"{name}.jws"
        path.write_text(token + "\n", encoding="utf-8")
        code, out, err = run_cli(
            capsys, "certificate", "verify", str(path), "--jwks", str(d.tmp / "jwks.json")
        )
        assert code == status, (name, out, err)
        text = out if status == 0 else err
        assert says in text, (name, text)
        assert len(text.strip().splitlines()) == 1, text

    view = d.tmp / "view.json"
    view.write_text(json.dumps({"certificate": good}), encoding="utf-8")
    assert (
        run_cli(capsys, "certificate", "verify", str(view), "--jwks", str(d.tmp / "jwks.json"))[0]
        == 0
    )
    code, _out, err = run_cli(
        capsys, "certificate", "verify", str(view), "--jwks", str(d.tmp / "nope.json")
    )
    assert code == 2
    assert "cannot read the JWKS" in err


def test_cli_keygen_makes_a_pair_that_signs_and_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _err = run_cli(capsys, "certificate", "keygen")
    assert code == 0
    made = json.loads(out)
    assert made["private_jwk"]["kid"] == made["kid"] == made["public_jwks"]["keys"][0]["kid"]
    assert "d" in made["private_jwk"]
    assert "d" not in made["public_jwks"]["keys"][0]
    env = {**new_secrets(), "ERASER_CERTIFICATE_SIGNING_KEY": json.dumps(made["private_jwk"])}
    assert certificates.public_key(deployment_settings(env)) == {
        "keys": made["public_jwks"]["keys"]
    }


# --- secrets in one step, and the start checks --------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ERASER_")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def eraser(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_secrets_generate_env_configures_a_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = 'eval "$("$PY" -m api.cli secrets generate --env)" && env -0'
    shell = subprocess.run(
        [shutil.which("bash") or "/bin/bash", "-c", script],
        env=clean_env(PY=sys.executable),
        cwd=tmp_path,
        capture_output=True,
        check=True,
        timeout=60,
    )
    variables = dict(
        entry.split("=", 1) for entry in shell.stdout.decode().split("\0") if "=" in entry
    )
    made = {k: v for k, v in variables.items() if k.startswith("ERASER_")}
    assert set(made) == set(SECRET_VARIABLES.values())
    for name, value in made.items():
        monkeypatch.setenv(name, value)
    settings = Settings(broker_url="redis://127.0.0.1:1/0", _env_file=None)  # type: ignore[call-arg]
    require_secrets(settings)  # accepted
    keys = keyring(settings)
    assert keys.dev is False
    assert keys.kid == json.loads(made["ERASER_CERTIFICATE_SIGNING_KEY"])["kid"]
    assert keys.pepper == made["ERASER_SUBJECT_HASH_PEPPER"].encode()
    assert (
        eraser(tmp_path, clean_env(), "secrets", "generate").stdout
        != eraser(tmp_path, clean_env(), "secrets", "generate").stdout
    )  # fresh every time


@pytest.mark.parametrize("missing", sorted(SECRET_VARIABLES.values()))
@pytest.mark.parametrize("command", ["api", "worker"])
def test_a_deployment_refuses_to_start_without_a_secret(
    tmp_path: Path, command: str, missing: str
) -> None:
    (tmp_path / "services.toml").write_text(
        '[subjects.tenant]\ncolumn = "tenant_id"\n[services.shop]\nurl_env = "SHOP_URL"\n',
        encoding="utf-8",
    )
    env = clean_env(
        ERASER_BROKER_URL="redis://127.0.0.1:1/0",
        ERASER_CONFIG=str(tmp_path / "services.toml"),
        ERASER_DATABASE_URL=f"sqlite:///{tmp_path / 'jobs.db'}",
        **{k: v for k, v in new_secrets().items() if k != missing},
    )
    refused = eraser(tmp_path, env, command, *(["--port", "1"] if command == "api" else []))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith(f"eraser: error: missing {missing}:")
    others = set(SECRET_VARIABLES.values()) - {missing}
    assert not any(name in line for name in others)


def test_the_embedded_default_needs_no_secret() -> None:
    require_secrets(Settings(_env_file=None))  # type: ignore[call-arg]
    with pytest.raises(MissingSecrets, match="ERASER_SUBJECT_HASH_PEPPER"):
        require_secrets(Settings(broker_url="redis://127.0.0.1:1/0", _env_file=None))  # type: ignore[call-arg]


def test_the_certificate_says_whether_the_counts_are_exact(deployment: Deployment) -> None:
    jwks = served_jwks(deployment)
    exact = jwcrypto_verify(token_of(deployment, deployment.erased), jwks)
    assert exact["counts_exact"] is True
    assert [s["counts_exact"] for s in exact["services"]] == [True]
    assert "rows_at_most" not in exact["services"][0]
    # An execution without a ledger died mid-batch: the counts are a lower bound.
    engine = create_engine(f"sqlite:///{deployment.tmp / 'jobs.db'}")
    with engine.begin() as conn:
        conn.execute(
            sa.update(Task)
            .where(Task.job_id == deployment.erased)
            .values(counts_exact=False, rows_at_most=None)
        )
    engine.dispose()

    inexact = jwcrypto_verify(token_of(deployment, deployment.erased), jwks)

    assert inexact["counts_exact"] is False
    (service,) = inexact["services"]
    assert (service["counts_exact"], service["rows_at_most"]) == (False, None)
    assert service["rows"] == exact["services"][0]["rows"]  # the least removed
