"""The CLI's read commands through the job store's named reads, on SQLite: ``eraser
jobs``, ``status``, ``dead-letters list`` and ``dead-letters show`` (with the task's
history)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from api.cli import EXIT_OK, main
from models import migrate
from models.messages import ErasureRequest
from models.registry import load_registry
from models.settings import get_settings
from models.store.database import JobStore
from models.store.tables import Attempt, DeadLetter, Job, JobStatus, Task, TaskStatus
from tasks.submit import submit
from worker.database import create_engine

REGISTRY = """
[subjects.tenant]
column = "tenant_id"
[services.shop]
url_env = "SHOP_URL"
"""


@pytest.fixture
def jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str, int]]:
    """(a failed job with a dead letter and two attempts, a pending job, the letter)."""
    (tmp_path / "services.toml").write_text(REGISTRY, encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    monkeypatch.setenv("ERASER_DATABASE_URL", url)
    monkeypatch.setenv("ERASER_CONFIG", str(tmp_path / "services.toml"))
    get_settings.cache_clear()
    engine = create_engine(url)
    migrate.upgrade(engine)
    store = JobStore(engine)
    registry = load_registry(tmp_path / "services.toml")
    failed, _ = submit(store, registry, ErasureRequest(subject_kind="tenant", subject_value="1"))
    pending, _ = submit(store, registry, ErasureRequest(subject_kind="tenant", subject_value="2"))
    with store.transaction() as session:
        session.execute(sa.update(Job).where(Job.id == failed.id).values(status=JobStatus.FAILED))
        task = session.scalars(sa.select(Task).where(Task.job_id == failed.id)).one()
        session.add_all(
            [
                Attempt(task_id=task.id, number=1, lease_id="a", outcome="retry", error="x"),
                Attempt(task_id=task.id, number=2, lease_id="b", outcome="failed", error="y"),
            ]
        )
        letter = DeadLetter(
            job_id=failed.id, service="shop", reason="permanent", error="y", attempts=2
        )
        session.add(letter)
        session.flush()
        letter_id = letter.id
    engine.dispose()
    yield failed.id, pending.id, letter_id
    get_settings.cache_clear()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert main(list(argv)) == EXIT_OK
    return json.loads(capsys.readouterr().out)


def test_jobs_and_status(jobs: tuple[str, str, int], capsys: pytest.CaptureFixture[str]) -> None:
    failed, pending, _ = jobs
    listed = run(capsys, "jobs", "--json")
    assert {j["id"] for j in listed} == {failed, pending}
    only_failed = run(capsys, "jobs", "--status", "failed", "--json")
    assert [j["id"] for j in only_failed] == [failed]
    shown = run(capsys, "status", failed, "--json")
    assert shown["tasks"][0]["history"][1]["outcome"] == "failed"


def test_dead_letters_list_and_show(
    jobs: tuple[str, str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    failed, _, letter = jobs
    listed = run(capsys, "dead-letters", "list", "--json")
    assert [(d["id"], d["job_id"]) for d in listed] == [(letter, failed)]
    shown = run(capsys, "dead-letters", "show", str(letter), "--json")
    assert [(a["number"], a["outcome"]) for a in shown["history"]] == [
        (1, "retry"),
        (2, "failed"),
    ]


def test_dead_letters_replay_sends_the_task_again_once(
    jobs: tuple[str, str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    failed, _, letter = jobs
    engine = create_engine(get_settings().database_url)
    with engine.begin() as conn:  # the letter's task failed for good
        conn.execute(sa.update(Task).where(Task.job_id == failed).values(status=TaskStatus.FAILED))
    engine.dispose()
    assert main(["dead-letters", "replay", str(letter), "--actor", "ops-7"]) == EXIT_OK
    assert capsys.readouterr().out == f"dead letter {letter}: job {failed}, shop sent again\n"
    assert run(capsys, "dead-letters", "list", "--json") == []  # replayed: listed with --all
    replayed = run(capsys, "dead-letters", "list", "--all", "--json")
    assert [(d["id"], d["replayed_by"]) for d in replayed] == [(letter, "ops-7")]
