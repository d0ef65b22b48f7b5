"""Erasure certificates: the signed evidence of one finished job, never its data.

A certificate holds the job id, a *keyed* hash of the subject (HMAC-SHA256 of
``kind:value`` under the certificate key: an auditor holding the value and the key
can confirm it, nobody can read the value back or confirm a guess without the key),
per-service and per-table counts, verification results, schema fingerprints and
timestamps. It is signed with HMAC-SHA256 under the same key, twice over:

- ``signature.value`` covers the whole document (canonical JSON);
- ``signature.fields`` holds one MAC per leaf (by JSON pointer), so ``verify`` can say
  *which* field was altered, added or removed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from models.store.tables import Job

FORMAT = "eraser.certificate/v1"


class CertificateError(Exception):
    """A certificate cannot be issued (job not finished, no key)."""


def subject_hash(key: bytes, kind: str, value: str) -> str:
    mac = hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{mac}"


def build(job: Job, key: bytes) -> dict[str, Any]:
    """The signed certificate of a finished job."""
    if job.finished_at is None:
        raise CertificateError(f"job {job.id} has not finished (status {job.status})")
    body: dict[str, Any] = {
        "format": FORMAT,
        "job_id": job.id,
        "subject_kind": job.subject_kind,
        "subject_hash": subject_hash(key, job.subject_kind, job.subject_value),
        "status": job.status,
        "dry_run": job.dry_run,
        "requested_by": job.requested_by,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat(),
        "total_rows": job.total_rows,
        "services": [
            {
                "service": t.service,
                "status": t.status,
                "verified": t.verified,
                "rows": t.total_rows,
                "schema_fingerprint": t.plan_fingerprint,
                "attempts": t.attempts,
                "tables": [
                    {"table": r["table"], "action": r["action"], "rows": r["rows"]} for r in t.rows
                ],
            }
            for t in job.tasks
        ],
    }
    return sign(body, key)


def sign(body: dict[str, Any], key: bytes) -> dict[str, Any]:
    doc = {k: v for k, v in body.items() if k != "signature"}
    doc["signature"] = {
        "alg": "HMAC-SHA256",
        "value": _mac(key, _canonical(doc)),
        "fields": {path: _mac(key, _canonical(value)) for path, value in _leaves(doc)},
    }
    return doc


def verify(doc: dict[str, Any], key: bytes) -> list[str]:
    """Problems found (empty: the certificate is intact and was signed with ``key``)."""
    signature = doc.get("signature")
    if not isinstance(signature, dict) or not isinstance(signature.get("fields"), dict):
        return ["the certificate has no signature"]
    body = {k: v for k, v in doc.items() if k != "signature"}
    fields: dict[str, Any] = signature["fields"]
    leaves = dict(_leaves(body))
    problems = []
    for path in sorted(leaves.keys() | fields.keys()):
        if path not in fields:
            problems.append(f"{path}: added after signing")
        elif path not in leaves:
            problems.append(f"{path}: removed after signing")
        elif not hmac.compare_digest(str(fields[path]), _mac(key, _canonical(leaves[path]))):
            problems.append(f"{path}: altered")
    whole = hmac.compare_digest(str(signature.get("value", "")), _mac(key, _canonical(body)))
    altered = [p for p in problems if p.endswith(": altered")]
    if not whole and leaves and len(altered) == len(leaves):
        return ["signature: made with another key (every field's MAC differs)"]
    if not whole and not problems:
        problems.append("signature: does not match (another key, or the field MACs were redone)")
    return problems


def _mac(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _leaves(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """(JSON pointer, value) of every scalar, and of empty lists and objects."""
    if isinstance(value, dict) and value:
        out = []
        for k in sorted(value):
            token = str(k).replace("~", "~0").replace("/", "~1")
            out += _leaves(value[k], f"{path}/{token}")
        return out
    if isinstance(value, list) and value:
        out = []
        for i, item in enumerate(value):
            out += _leaves(item, f"{path}/{i}")
        return out
    return [(path or "/", value)]
