"""The Redis store against a real server: what goes, what stays byte-identical, exact
counts after a restart, and a subject value that can never widen a pattern."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.cluster import RedisCluster

from models.registry import RedisService
from models.store.progress import as_outcomes
from tests.stores.conftest import RedisServer, clear_namespace
from worker.execution.options import Progress
from worker.faults import FaultKind, classify
from worker.stores import RedisStore, open_store
from worker.stores.exceptions import StoreUnavailable, SubjectValueRefused
from worker.stores.redis import glob_escape


def service(namespace: str, **extra: object) -> RedisService:
    return RedisService.model_validate(
        {
            "kind": "redis",
            "url_env": "CACHE_URL",
            "keys": [f"{namespace}forecast:{{value}}:*", f"{namespace}tenant:{{value}}"],
            **extra,
        }
    )


def fill(
    client: redis.Redis | RedisCluster, namespace: str, value: str, n: int
) -> dict[bytes, bytes]:
    """``n`` forecast keys and one tenant key for ``value``; their names and values."""
    made = {f"{namespace}forecast:{value}:{i}".encode(): f"{value}/{i}".encode() for i in range(n)}
    made[f"{namespace}tenant:{value}".encode()] = b"profile"
    if isinstance(client, RedisCluster):
        client.mset_nonatomic(made)  # the keys live in many slots
    else:
        client.mset(made)
    return made


def contents(client: redis.Redis, keys: list[bytes]) -> dict[bytes, bytes | None]:
    return {k: client.dump(k) for k in keys}


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.mark.parametrize(
    ("subject", "others"),
    [
        # a glob star: unescaped, 'a*' would match 'ab' and 'a'
        ("a*", ["ab", "a", "a**"]),
        # a question mark: unescaped, 'b?' would match 'bx'
        ("b?", ["bx", "b"]),
        # a character class: unescaped, '[x]' would match 'x'
        ("[x]", ["x", "[y]"]),
        # a backslash: unescaped, 'c\\*' would match 'c*' and nothing of its own
        ("c\\*", ["c*", "c\\x"]),
        # a prefix of another subject: tenant 1 against tenant 10
        ("1", ["10", "11", "01"]),
    ],
)
def test_erase_removes_the_subject_and_leaves_others_byte_identical(
    redis_url: str, client: redis.Redis, namespace: str, subject: str, others: list[str]
) -> None:
    mine = fill(client, namespace, subject, 7)
    theirs = {}
    for other in others:
        theirs.update(fill(client, namespace, other, 5))
    before = contents(client, list(theirs))
    store = open_store("cache", service(namespace, batch_size=3, scan_count=10), redis_url)
    with store:
        preview = store.preview(subject)
        heard: list[Progress] = []
        report = store.erase(subject, heard.append)
        assert store.verify(subject) == 0
    assert client.exists(*mine) == 0
    assert contents(client, list(theirs)) == before
    # the dry run counted what went: 7 forecast keys, 1 tenant key; tables are the
    # templates as written, never holding the value
    assert {(t.table, t.rows) for t in preview.tables} == {
        (f"{namespace}forecast:{{value}}:*", 7),
        (f"{namespace}tenant:{{value}}", 1),
    }
    assert preview.tables == report.tables
    assert (preview.dry_run, report.dry_run, report.total_rows) == (True, False, 8)
    assert report.verified
    assert not report.nothing_matched
    # batches of 3: 7 keys in 3 batches, then 1
    assert [p.rows for p in heard] == [3, 3, 1, 1]
    assert heard[-1].total_rows == 8
    # no per-table counts for the task to add to the report, which counts every attempt
    assert as_outcomes(heard[-1].rows_by_table) == []


def test_nothing_matched(redis_url: str, client: redis.Redis, namespace: str) -> None:
    fill(client, namespace, "2", 3)
    with open_store("cache", service(namespace), redis_url) as store:
        report = store.erase("3")
    assert (report.total_rows, report.tables, report.verified) == (0, [], True)
    assert report.nothing_matched


def test_a_value_holding_the_delimiter_is_refused(redis_url: str, namespace: str) -> None:
    # 'forecast:{value}:*' with '1:x' would name keys of tenant 1
    with open_store("cache", service(namespace), redis_url) as store:
        with pytest.raises(SubjectValueRefused) as info:
            store.erase("1:x")
        with pytest.raises(SubjectValueRefused):
            store.preview("")
    assert "1:x" not in str(info.value)
    assert classify(info.value).kind is FaultKind.PERMANENT


def test_glob_escape() -> None:
    assert glob_escape("a*b?[c]\\d") == "a\\*b\\?\\[c\\]\\\\d"
    assert glob_escape("tenant-1") == "tenant-1"


# --- the subject's value never widens a pattern ------------------------------------------

VALUES = st.text(alphabet="ab1*?[]\\^-!", min_size=1, max_size=6)


def widened(value: str) -> list[str]:
    """Values whose keys an unescaped pattern for ``value`` would match."""
    return [
        value.replace("*", "").replace("?", "a"),
        value.replace("*", "ab").replace("?", "1"),
        value.replace("[", "").replace("]", ""),
        value.replace("\\", ""),
        value + "1",
    ]


@pytest.fixture(scope="module")
def module_store(redis_url: str) -> Iterator[tuple[RedisStore, redis.Redis, str]]:
    ns = "prop:"
    client = redis.Redis.from_url(redis_url)
    store = RedisStore("cache", service(ns, batch_size=4, scan_count=50), redis_url)
    yield store, client, ns
    store.close()
    clear_namespace(client, ns)
    client.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=VALUES, extra=st.lists(VALUES, max_size=4))
def test_property_escaped_values_never_reach_other_subjects(
    module_store: tuple[RedisStore, redis.Redis, str], subject: str, extra: list[str]
) -> None:
    store, client, ns = module_store
    clear_namespace(client, ns)
    others = {v for v in [*widened(subject), *extra] if v and v != subject}
    mine = fill(client, ns, subject, 3)
    theirs: dict[bytes, bytes] = {}
    for other in sorted(others):
        theirs.update(fill(client, ns, other, 2))
    before = contents(client, list(theirs))
    assert store.preview(subject).total_rows == 4
    report = store.erase(subject)
    assert report.total_rows == 4
    assert client.exists(*mine) == 0
    assert contents(client, list(theirs)) == before


# --- failures -------------------------------------------------------------------------------


def test_redis_restarted_mid_erasure_then_retried_counts_exactly(own_redis: RedisServer) -> None:
    client = redis.Redis.from_url(own_redis.url)
    fill(client, "", "t1", 40)
    theirs = fill(client, "", "t10", 10)
    before = contents(client, list(theirs))
    client.close()
    svc = service("", batch_size=5, scan_count=5)
    store = open_store("cache", svc, own_redis.url)
    heard: list[Progress] = []

    def kill_after_two_batches(progress: Progress) -> None:
        heard.append(progress)
        if len(heard) == 2:
            own_redis.kill()

    with pytest.raises(StoreUnavailable) as info:
        store.erase("t1", kill_after_two_batches, erasure_id="job-7:cache")
    assert classify(info.value).kind is FaultKind.TRANSIENT
    assert sum(p.rows for p in heard) == 10
    store.close()
    own_redis.start()
    with open_store("cache", svc, own_redis.url) as store:
        assert 0 < store.verify("t1") <= 31  # the kill came after 10 of the 41 went
        report = store.erase("t1", erasure_id="job-7:cache")
        # a redelivery after success reports the same counts
        again = store.erase("t1", erasure_id="job-7:cache")
    assert report.total_rows == again.total_rows == 41
    assert report.verified
    client = redis.Redis.from_url(own_redis.url)
    assert contents(client, list(theirs)) == before
    client.close()


def test_a_lost_reply_is_still_counted(
    redis_url: str, client: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server ran a batch but its answer never came: the retry counts that batch."""
    fill(client, namespace, "lost", 9)
    store = RedisStore("cache", service(namespace, batch_size=4), redis_url)
    real = store._unlink_counted  # the fault comes after the real call
    calls = []

    def answer_lost(*args: object, **kwargs: object) -> object:
        result = real(*args, **kwargs)
        calls.append(result)
        if len(calls) == 2:
            raise redis.exceptions.ConnectionError("connection reset")
        return result

    monkeypatch.setattr(store, "_unlink_counted", answer_lost)
    erasure_id = f"{namespace}job"
    with pytest.raises(StoreUnavailable):
        store.erase("lost", erasure_id=erasure_id)
    monkeypatch.setattr(store, "_unlink_counted", real)
    report = store.erase("lost", erasure_id=erasure_id)
    assert report.total_rows == 10
    store.close()


def test_an_unreachable_server_is_transient() -> None:
    svc = service("x:")
    with open_store("cache", svc, "redis://127.0.0.1:1/0") as store:
        with pytest.raises(StoreUnavailable) as info:
            store.preview("1")
    assert classify(info.value).kind is FaultKind.TRANSIENT


def test_cluster_mode_scans_every_primary(redis_cluster: str) -> None:
    """Keys of one subject spread over the slots of three primaries all go; another
    subject's keys stay byte-identical; the counts are kept across a second call."""
    client = RedisCluster.from_url(redis_cluster)
    mine = fill(client, "", "a*", 60)
    theirs = fill(client, "", "ab", 20)
    before = {k: client.dump(k) for k in theirs}
    nodes = {client.get_node_from_key(k).name for k in mine}
    assert len(nodes) == 3  # the subject's keys live on every primary
    svc = service("", batch_size=7, scan_count=20, cluster=True)
    with open_store("cache", svc, redis_cluster) as store:
        preview = store.preview("a*")
        report = store.erase("a*", erasure_id="job-1:cache")
        again = store.erase("a*", erasure_id="job-1:cache")
        assert store.verify("a*") == 0
    assert preview.total_rows == report.total_rows == again.total_rows == 61
    assert report.verified
    assert sum(client.exists(k) for k in mine) == 0
    assert {k: client.dump(k) for k in theirs} == before
    client.close()
