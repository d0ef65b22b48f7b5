"""The S3 store against a real SeaweedFS: objects, versions and delete markers, bytes,
other subjects' objects byte-identical, and exact counts across a restart."""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import pytest

from models.registry import S3Service
from models.store.progress import as_outcomes
from tests.stores.conftest import Weed
from worker.execution.options import Progress
from worker.faults import FaultKind, classify
from worker.stores import S3Store, open_store
from worker.stores.exceptions import (
    InvalidStoreUrl,
    StoreRefused,
    StoreUnavailable,
    SubjectValueRefused,
)


def service(**extra: object) -> S3Service:
    return S3Service.model_validate(
        {
            "kind": "s3",
            "url_env": "ARTIFACTS_URL",
            "prefixes": ["tenants/{value}/", "exports/{value}.csv"],
            **extra,
        }
    )


def fill(client: Any, bucket: str, value: str, n: int, base: str = "base/") -> dict[str, bytes]:
    made = {f"{base}tenants/{value}/model-{i}": f"{value}:{i}".encode() * (i + 1) for i in range(n)}
    made[f"{base}exports/{value}.csv"] = b"id,total\n"
    for key, body in made.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    return made


def everything(client: Any, bucket: str) -> dict[tuple[str, str], bytes]:
    """Every version in the bucket and its bytes (delete markers as b'<marker>')."""
    found: dict[tuple[str, str], bytes] = {}
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            body = client.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
            found[(v["Key"], v["VersionId"])] = body["Body"].read()
        for m in page.get("DeleteMarkers", []):
            found[(m["Key"], m["VersionId"])] = b"<marker>"
    return found


def current(client: Any, bucket: str, prefix: str = "") -> dict[str, bytes]:
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            found[o["Key"]] = client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return found


@pytest.mark.parametrize(
    ("subject", "others"),
    [
        # a prefix of another subject: tenant 1 against tenant 10 (the '/' delimits)
        ("1", ["10", "11"]),
        # S3 prefixes have no wildcards: these are literal characters
        ("a*", ["ab", "a"]),
        ("[x]", ["x"]),
        ("tenant:1", ["tenant:10"]),
    ],
)
def test_erase_removes_the_subject_and_leaves_others_byte_identical(
    s3_env: Weed, bucket: str, subject: str, others: list[str]
) -> None:
    client = s3_env.client()
    mine = fill(client, bucket, subject, 12)
    for other in others:
        fill(client, bucket, other, 4)
    outside = {"tenants/" + subject + "/not-under-base": b"kept"}  # not under the base
    client.put_object(Bucket=bucket, Key=next(iter(outside)), Body=b"kept")
    before = {k: v for k, v in current(client, bucket).items() if k not in mine}
    with open_store("artifacts", service(batch_size=5), f"s3://{bucket}/base") as store:
        preview = store.preview(subject)
        heard: list[Progress] = []
        report = store.erase(subject, heard.append)
        assert store.verify(subject) == 0
    assert current(client, bucket) == before
    assert {(t.table, t.rows, t.bytes) for t in report.tables} == {
        ("tenants/{value}/", 12, sum(len(v) for k, v in mine.items() if "/model-" in k)),
        ("exports/{value}.csv", 1, len(b"id,total\n")),
    }
    assert report.total_bytes == sum(len(v) for v in mine.values())
    assert (preview.tables, preview.total_bytes) == (report.tables, report.total_bytes)
    assert report.verified
    assert not report.nothing_matched
    assert [p.rows for p in heard] == [5, 5, 2, 1]
    # the progress reads as the task reads the engine's: what this execution removed
    read = as_outcomes(heard[-1].rows_by_table)
    assert [(t.table, t.action, t.rows) for t in read] == [
        (t.table, t.action, t.rows) for t in report.tables
    ]


def test_nothing_matched(s3_env: Weed, bucket: str) -> None:
    fill(s3_env.client(), bucket, "10", 2)
    with open_store("artifacts", service(), f"s3://{bucket}/base") as store:
        report = store.erase("1")
    assert report.nothing_matched
    assert report.verified
    assert (report.total_rows, report.total_bytes) == (0, 0)


def versioned(client: Any, bucket: str, value: str) -> int:
    """Three versions of one object, one object deleted (a delete marker over two
    versions) and one plain object: 7 entries under the value's prefix."""
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for i in range(3):
        client.put_object(Bucket=bucket, Key=f"base/tenants/{value}/model", Body=b"v" * (i + 1))
    for i in range(2):
        client.put_object(Bucket=bucket, Key=f"base/tenants/{value}/old", Body=b"o" * (i + 1))
    client.delete_object(Bucket=bucket, Key=f"base/tenants/{value}/old")
    client.put_object(Bucket=bucket, Key=f"base/tenants/{value}/plain", Body=b"pp")
    return 7


def test_versioned_bucket_loses_every_version_and_delete_marker(s3_env: Weed, bucket: str) -> None:
    client = s3_env.client()
    assert versioned(client, bucket, "1") == 7
    versioned(client, bucket, "10")
    before = {k: v for k, v in everything(client, bucket).items() if "/tenants/10/" in k[0]}
    with open_store("artifacts", service(), f"s3://{bucket}/base") as store:
        preview = store.preview("1")
        report = store.erase("1")
        assert store.verify("1") == 0
    left = client.list_object_versions(Bucket=bucket, Prefix="base/tenants/1/")
    assert not left.get("Versions")
    assert not left.get("DeleteMarkers")
    assert everything(client, bucket) == before
    # 3 + 2 versions, 1 delete marker, 1 plain object; bytes 1+2+3 + 1+2 + 2
    assert (report.total_rows, report.total_bytes) == (7, 11)
    assert (preview.total_rows, preview.total_bytes) == (7, 11)


def test_versions_keep_removes_only_current_objects(s3_env: Weed, bucket: str) -> None:
    client = s3_env.client()
    versioned(client, bucket, "1")
    with open_store("artifacts", service(versions="keep"), f"s3://{bucket}/base") as store:
        preview = store.preview("1")
        report = store.erase("1")
        assert store.verify("1") == 0
    assert current(client, bucket, "base/tenants/1/") == {}
    # the current 'model' (3 bytes) and 'plain' (2 bytes); 'old' was already deleted
    assert (report.total_rows, report.total_bytes) == (2, 5)
    assert (preview.total_rows, preview.total_bytes) == (2, 5)
    # the older versions stay, as asked
    kept = client.list_object_versions(Bucket=bucket, Prefix="base/tenants/1/")
    assert len(kept["Versions"]) == 6


@pytest.mark.parametrize(
    "value",
    [
        "",  # empty: 'tenants//' is not the subject's prefix
        "1/..",  # a slash: another prefix
        "..",  # a parent
        "a.csv",  # the delimiter after {value} in 'exports/{value}.csv'
    ],
)
def test_values_that_would_change_the_prefix_are_refused(s3_env: Weed, value: str) -> None:
    with open_store("artifacts", service(), "s3://bucket/base") as store:
        with pytest.raises(SubjectValueRefused) as info:
            store.erase(value)
    assert classify(info.value).kind is FaultKind.PERMANENT


def test_bad_url_and_missing_bucket(s3_env: Weed) -> None:
    with pytest.raises(InvalidStoreUrl, match="ARTIFACTS_URL must hold"):
        open_store("artifacts", service(), "https://bucket/base")
    with open_store("artifacts", service(), "s3://no-such-bucket-here") as store:
        with pytest.raises(StoreRefused, match="NoSuchBucket") as info:
            store.erase("1")
    assert classify(info.value).kind is FaultKind.PERMANENT


def test_seaweedfs_restarted_mid_erasure_then_retried_counts_exactly(
    s3_env: Weed, bucket: str
) -> None:
    client = s3_env.client()
    mine = fill(client, bucket, "7", 30)
    fill(client, bucket, "70", 5)
    before = {k: v for k, v in current(client, bucket).items() if k not in mine}
    store = open_store("artifacts", service(batch_size=4), f"s3://{bucket}/base")
    heard: list[Progress] = []

    def stop_after_two_batches(progress: Progress) -> None:
        heard.append(progress)
        if len(heard) == 2:
            s3_env.stop()

    try:
        with pytest.raises(StoreUnavailable) as info:
            store.erase("7", stop_after_two_batches, erasure_id="job-9:artifacts")
        assert classify(info.value).kind is FaultKind.TRANSIENT
    finally:
        s3_env.start()
    report = store.erase("7", erasure_id="job-9:artifacts")
    store.close()
    # the task keeps the first execution's progress and adds the retry's report
    first = sum(heard[-1].rows_by_table.values())
    assert first == 8  # two batches of 4
    assert report.total_rows == 31 - first
    assert report.verified
    assert current(s3_env.client(), bucket) == before


def test_a_lost_delete_reply_is_still_counted(
    s3_env: Weed, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SeaweedFS deleted a batch but its answer never came: the retry counts it once."""
    client = s3_env.client()
    fill(client, bucket, "5", 9)
    store = S3Store("artifacts", service(batch_size=4), f"s3://{bucket}/base")
    real = store.client.delete_objects
    calls: list[object] = []

    def answer_lost(**kwargs: Any) -> Any:
        result = real(**kwargs)
        calls.append(result)
        if len(calls) == 2:
            raise botocore.exceptions.ConnectionClosedError(endpoint_url=s3_env.endpoint)
        return result

    monkeypatch.setattr(store.client, "delete_objects", answer_lost)
    heard: list[Progress] = []
    with pytest.raises(StoreUnavailable):
        store.erase("5", heard.append, erasure_id="job-3:artifacts")
    monkeypatch.setattr(store.client, "delete_objects", real)
    report = store.erase("5", erasure_id="job-3:artifacts")
    again = store.erase("5", erasure_id="job-3:artifacts")  # a redelivery: nothing new
    store.close()
    # the first execution's progress (the batch answered) and the retry's report (the
    # batch whose answer was lost, and the rest) count every object once
    assert sum(heard[-1].rows_by_table.values()) == 4
    assert report.total_rows == 6
    assert again.total_rows == 0
