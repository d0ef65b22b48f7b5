"""The one-database CLI on SQLite: plan, dry run, erase, and its errors."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import pty
import re
import select
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.cli import EXIT_ERROR, EXIT_NOTHING_MATCHED, EXIT_OK, main, parse_policy
from models.erasure import TableAction
from worker.database import redact
from worker.exceptions import EraserError

SCHEMA = """
CREATE TABLE tenants (id INTEGER PRIMARY KEY, name TEXT);
CREATE TABLE "Order" (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants(id));
CREATE INDEX order_tenant ON "Order"(tenant_id);
CREATE TABLE "order line" (id INTEGER PRIMARY KEY,
    order_id INTEGER NOT NULL REFERENCES "Order"(id) ON DELETE CASCADE, qty INTEGER);
CREATE INDEX line_order ON "order line"(order_id);
CREATE TABLE notes (id INTEGER PRIMARY KEY, order_id INTEGER REFERENCES "Order"(id)
    ON DELETE SET NULL, body TEXT);
"""


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    path = tmp_path / "estate.db"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.executemany("INSERT INTO tenants VALUES (?, ?)", [(1, "a"), (2, "b")])
    conn.executemany('INSERT INTO "Order" VALUES (?, ?)', [(i, 1 + i % 2) for i in range(1, 21)])
    conn.executemany(
        'INSERT INTO "order line" VALUES (?, ?, ?)',
        [(i, 1 + i % 20, 1) for i in range(1, 101)],
    )
    conn.executemany("INSERT INTO notes VALUES (?, ?, ?)", [(i, i, "n") for i in range(1, 21)])
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


def count(url: str, sql: str) -> int:
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


ARGS = ["--subject-column", "tenant_id", "--subject-column", "tenants.id", "--subject", "1"]


def test_plan_json_lists_children_first(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "--db", sqlite_url, *ARGS, "--json"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    tables = [s["table"] for s in doc["steps"]]
    assert (
        tables.index("main.order line") < tables.index("main.Order") < tables.index("main.tenants")
    )
    assert doc["schema_fingerprint"].startswith("sha256:")
    nullify = [s for s in doc["steps"] if s["action"] == "nullify"]
    assert [s["table"] for s in nullify] == ["main.notes"]


def test_plan_text_is_readable(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--db", sqlite_url, *ARGS]) == EXIT_OK
    out = capsys.readouterr().out
    assert "main.order line" in out
    assert "anchor" in out


def test_dry_run_counts_exactly_and_writes_nothing(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["erase", "--db", sqlite_url, *ARGS, "--dry-run", "--json"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["dry_run"] is True
    rows = {(t["table"], t["action"]): t["rows"] for t in doc["tables"]}
    assert rows[("main.Order", "delete")] == 10
    assert rows[("main.order line", "delete")] == 50
    assert rows[("main.tenants", "delete")] == 1
    assert rows[("main.notes", "nullify")] == 10
    assert doc["total_rows"] == 61
    assert count(sqlite_url, 'SELECT count(*) FROM "order line"') == 100

    argv = ["erase", "--db", sqlite_url, *ARGS, "--json", "--batch-size", "7", "--yes"]
    assert main(argv) == EXIT_OK
    done = json.loads(capsys.readouterr().out)
    assert done["verified"] is True
    assert done["total_rows"] == doc["total_rows"]
    assert count(sqlite_url, 'SELECT count(*) FROM "order line"') == 50
    assert count(sqlite_url, 'SELECT count(*) FROM "Order" WHERE tenant_id = 1') == 0
    assert count(sqlite_url, "SELECT count(*) FROM notes WHERE order_id IS NULL") == 10
    assert count(sqlite_url, "SELECT count(*) FROM notes") == 20


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # an unknown subject column
        (["--subject-column", "nope", "--subject", "1"], "no table has the subject column"),
        # a subject value that does not fit an integer column
        (["--subject-column", "tenant_id", "--subject", "abc"], "not a valid int"),
        # a policy on a table that does not exist
        (
            ["--subject-column", "tenant_id", "--subject", "1", "--policy", "ghost=keep"],
            "names table 'ghost'",
        ),
        # a policy with an unknown action
        (
            ["--subject-column", "tenant_id", "--subject", "1", "--policy", "notes=shred"],
            "unknown action",
        ),
    ],
)
def test_bad_input_is_one_line_and_nonzero(
    sqlite_url: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["erase", "--db", sqlite_url, "--dry-run", *argv]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("eraser: error: ")
    assert err.count("\n") == 1
    assert message in err
    assert "Traceback" not in err


def test_kept_table_blocking_refuses(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["erase", "--db", sqlite_url, *ARGS, "--policy", "order line=keep", "--yes"]
    assert main(argv) == EXIT_ERROR
    assert "kept table main.order line" in capsys.readouterr().err
    assert count(sqlite_url, 'SELECT count(*) FROM "Order"') == 20


def test_unreachable_database_hides_the_password() -> None:
    url = "postgresql://eraser:s3cret-pw@127.0.0.1:1/nowhere"
    proc = subprocess.run(
        [sys.executable, "-m", "api.cli", "plan", "--db", url, *ARGS],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == EXIT_ERROR
    assert proc.stderr.startswith(
        "eraser: error: cannot connect to postgresql+psycopg2://eraser:***@"
    )
    assert "s3cret-pw" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://eraser@127.0.0.1:1/nowhere?password=s3cret-pw",
        "postgresql://eraser@127.0.0.1:1/nowhere?sslmode=disable&PASSWORD=s3cret-pw",
        "postgresql+psycopg://eraser@127.0.0.1:1/nowhere?password=s3cret-pw",
    ],
    ids=["query", "query-upper-case", "unknown-driver"],
)
def test_a_password_given_as_a_query_parameter_is_hidden_too(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """libpq takes ``?password=``; only the ``user:password@`` form was hidden."""
    assert main(["plan", "--db", url, *ARGS]) == EXIT_ERROR
    out, err = capsys.readouterr()
    assert "s3cret-pw" not in out + err
    assert err.startswith("eraser: error: cannot connect to ")
    assert "=***" in err
    assert redact(url).count("***") == 1
    assert "s3cret-pw" not in redact(url)


def test_db_env_reads_the_url_from_the_environment(
    sqlite_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORDERS_DATABASE_URL", sqlite_url)
    assert main(["erase", "--db-env", "ORDERS_DATABASE_URL", *ARGS, "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_rows"] == 61
    monkeypatch.delenv("ORDERS_DATABASE_URL")
    assert main(["plan", "--db-env", "ORDERS_DATABASE_URL", *ARGS]) == EXIT_ERROR
    assert "environment variable is not set" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "action", "values"),
    [
        ("customers=keep", TableAction.KEEP, {}),
        ("links=unlink", TableAction.UNLINK, {}),
        (
            "customers=anonymize:email=null,name=erased,age=0",
            TableAction.ANONYMIZE,
            {"email": None, "name": "erased", "age": 0},
        ),
    ],
)
def test_parse_policy(text: str, action: TableAction, values: dict[str, object]) -> None:
    table, policy = parse_policy(text)
    assert table == text.split("=", maxsplit=1)[0]
    assert policy.action is action
    assert policy.set == values


def test_parse_policy_rejects_garbage() -> None:
    with pytest.raises(EraserError, match="expected TABLE=ACTION"):
        parse_policy("customers")


# --- the real `eraser` entry point, as a person or a script meets it -------------------

ROOT = Path(__file__).resolve().parents[2]
ERASER = Path(sys.executable).with_name("eraser")

#: A schema with a self-reference (categories), a cycle (projects <-> members, broken by
#: the nullable lead_id) and an ON DELETE SET NULL reference (tasks.category_id).
CYCLIC = """
CREATE TABLE tenants (id INTEGER PRIMARY KEY, name TEXT);
CREATE TABLE categories (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    parent_id INTEGER REFERENCES categories(id));
CREATE INDEX categories_tenant ON categories(tenant_id);
CREATE INDEX categories_parent ON categories(parent_id);
CREATE TABLE projects (id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    lead_id INTEGER REFERENCES members(id));
CREATE INDEX projects_tenant ON projects(tenant_id);
CREATE INDEX projects_lead ON projects(lead_id);
CREATE TABLE members (id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL REFERENCES projects(id));
CREATE INDEX members_project ON members(project_id);
CREATE TABLE tasks (id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL REFERENCES projects(id),
    category_id INTEGER REFERENCES categories(id) ON DELETE SET NULL);
CREATE INDEX tasks_project ON tasks(project_id);
CREATE INDEX tasks_category ON tasks(category_id);
"""

TREE = """\
Plan (sqlite, schema sha256:…, subject column tenant_id)
main.tenants  keep  (not a subject column: add --subject-column tenants.id to erase its row too)
├── main.categories  delete  ⚓ tenant_id = subject  ↻ self-reference: tree (children before parents, any depth)
│   └── main.tasks  nullify category_id  (ON DELETE SET NULL: the rows stay)
└── main.projects  delete  ⚓ tenant_id = subject  ↻ cycle main.members → main.projects → main.members, broken by: nullify a nullable foreign key on rows being erased
    ├── main.members  delete  via project_id  ↻ in the cycle above
    │   └── main.projects  via lead_id, shown above
    └── main.tasks  delete  via project_id
⚓ anchor: rows read by the subject column; the others through the references shown. Children are erased before their parents.
"""  # noqa: E501 - the snapshot is the output, one line per node

COUNTED = """\
Plan (sqlite, schema sha256:…, subject column tenant_id)
main.tenants  keep  (not a subject column: add --subject-column tenants.id to erase its row too)
├── main.categories  3 rows  delete  ⚓ tenant_id = subject  ↻ self-reference: tree (children before parents, any depth)
│   └── main.tasks  3 rows  nullify category_id  (ON DELETE SET NULL: the rows stay)
└── main.projects  2 rows  delete  ⚓ tenant_id = subject  ↻ cycle main.members → main.projects → main.members, broken by: nullify a nullable foreign key on rows being erased
    ├── main.members  6 rows  delete  via project_id  ↻ in the cycle above
    │   └── main.projects  via lead_id, shown above
    └── main.tasks  8 rows  delete  via project_id
Dry run: 19 row(s) of the subject would be removed, 3 reference(s) cleared (nothing written).
⚓ anchor: rows read by the subject column; the others through the references shown. Children are erased before their parents.
"""  # noqa: E501 - the snapshot is the output, one line per node


@pytest.fixture
def cyclic_url(tmp_path: Path) -> str:
    path = tmp_path / "projects.db"
    conn = sqlite3.connect(path)
    conn.executescript(CYCLIC)
    conn.executemany("INSERT INTO tenants VALUES (?, ?)", [(1, "a"), (2, "b")])
    conn.executemany(
        "INSERT INTO categories VALUES (?, ?, ?)",
        [(1, 1, None), (2, 1, 1), (3, 1, 2), (4, 2, None)],
    )
    conn.executemany(
        "INSERT INTO projects VALUES (?, ?, ?)", [(1, 1, None), (2, 1, None), (3, 2, None)]
    )
    conn.executemany("INSERT INTO members VALUES (?, ?)", [(i, 1 + i % 3) for i in range(1, 10)])
    conn.execute("UPDATE projects SET lead_id = 1 WHERE id = 2")
    conn.executemany(
        "INSERT INTO tasks VALUES (?, ?, ?)", [(i, 1 + i % 3, 1 + i % 4) for i in range(1, 13)]
    )
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


def clean_env(**extra: str) -> dict[str, str]:
    """No ERASER_ setting at all (no broker, no registry, no job store), wide output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ERASER_", "COLUMNS"))}
    return {**env, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "PYTHONIOENCODING": "utf-8", **extra}


def eraser(
    *args: str, cwd: Path, stdin: int | None = subprocess.DEVNULL, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ERASER), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env=clean_env(**env),
        stdin=stdin,
    )


def masked(text: str) -> str:
    return re.sub(r"sha256:[0-9a-f]{12}", "sha256:…", text)


def rows(url: str, table: str, where: str = "1 = 1") -> int:
    return count(url, f"SELECT count(*) FROM {table} WHERE {where}")


#: Every command and group, as typed (each must answer --help with no configuration).
COMMANDS = [
    [],
    ["plan"],
    ["erase"],
    ["demo"],
    ["submit"],
    ["status"],
    ["jobs"],
    ["services"],
    ["worker"],
    ["db"],
    ["db", "upgrade"],
    ["retry"],
    ["beat"],
    ["dead-letters"],
    ["dead-letters", "list"],
    ["dead-letters", "show"],
    ["dead-letters", "replay"],
    ["api"],
    ["flower-proxy"],
    ["health"],
    ["health", "worker"],
    ["keys"],
    ["keys", "create"],
    ["keys", "revoke"],
    ["keys", "list"],
    ["certificate"],
    ["certificate", "keygen"],
    ["certificate", "public-key"],
    ["certificate", "show"],
    ["certificate", "verify"],
    ["secrets"],
    ["secrets", "generate"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "eraser")
def test_every_command_answers_help_without_any_configuration(
    command: list[str], tmp_path: Path
) -> None:
    """An empty directory and no ERASER_ variable: no registry, an in-process broker,
    yet `eraser worker --help` (and every other) prints its help."""
    done = eraser(*command, "--help", cwd=tmp_path)
    assert done.returncode == EXIT_OK, done.stderr
    assert done.stderr == ""
    assert f"Usage: eraser {' '.join(command)}".rstrip() in done.stdout
    assert "Traceback" not in done.stdout
    assert not list(tmp_path.iterdir())  # nothing created (no eraser.db)


def test_help_is_plain_text_in_a_pipe_and_rich_panels_on_a_terminal(tmp_path: Path) -> None:
    """Piped, the help is plain text with a section per panel, in the panels' order;
    on a terminal, Rich draws the same panels."""
    piped = eraser("erase", "--help", cwd=tmp_path)
    assert piped.returncode == EXIT_OK, piped.stderr
    assert "╭" not in piped.stdout
    sections = re.findall(r"^(\S[^\n]*):$", piped.stdout, re.MULTILINE)
    assert sections == ["Options", "What to erase", "Safety and output", "Tuning"]
    assert re.search(r"^  --batch-size N +Rows per transaction", piped.stdout, re.MULTILINE)
    top = eraser("--help", cwd=tmp_path).stdout
    assert re.findall(r"^(\S[^\n]*):$", top, re.MULTILINE)[:3] == [
        "Options",
        "One database (no broker, no job store)",
        "Getting started",
    ]
    whole = (
        r"^  plan +Show the erasure plan: a tree per anchor table, children under their parents\.$"
    )
    assert re.search(whole, top, re.MULTILINE)  # a command's first sentence, not cut short

    code, shown = _on_a_terminal(["erase", "--help"], "", tmp_path)
    assert code == EXIT_OK, shown
    assert "─ What to erase ─" in shown
    assert "─ Tuning ─" in shown


def _walk(command: Any, path: str = "eraser") -> Iterator[tuple[str, Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, f"{path} {name}")


def test_every_option_has_help_and_shows_its_default() -> None:
    from api.cli.app import _command  # noqa: PLC0415 - the Click tree behind the app

    missing = []
    for path, command in _walk(_command()):
        assert command.help, f"{path} has no help"
        for param in command.params:
            if param.param_type_name == "option" and not param.help:
                missing.append(f"{path} {param.opts[0]}")
    assert missing == []


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("api.cli.database:FkChecks", "worker.execution.options:FK_CHECKS"),
        ("api.cli.jobs:JobState", "models.store.tables:JobStatus"),
        ("api.cli.keys:KeyScope", "api.keys:Scope"),
    ],
)
def test_the_choices_the_cli_lists_are_the_engines(ours: str, theirs: str) -> None:
    """The command line keeps its own copy of these choices (importing their modules
    would cost every command's start-up): they must not drift."""

    def values(ref: str) -> list[str]:
        module, name = ref.split(":")
        return [str(getattr(v, "value", v)) for v in getattr(importlib.import_module(module), name)]

    assert values(ours) == values(theirs)


def test_version(tmp_path: Path) -> None:
    done = eraser("--version", cwd=tmp_path)
    assert done.returncode == EXIT_OK
    assert done.stdout == f"eraser {importlib.metadata.version('eraser')}\n"


def test_plan_draws_a_tree_with_the_cycle_and_the_self_reference(
    cyclic_url: str, tmp_path: Path
) -> None:
    done = eraser("plan", "--db", cyclic_url, "--subject-column", "tenant_id", cwd=tmp_path)
    assert done.returncode == EXIT_OK, done.stderr
    assert masked(done.stdout) == TREE
    assert "\x1b[" not in done.stdout  # not a terminal: no colours


def test_plan_with_a_subject_counts_every_node_and_writes_nothing(
    cyclic_url: str, tmp_path: Path
) -> None:
    argv = ["plan", "--db", cyclic_url, "--subject-column", "tenant_id", "--subject", "1"]
    done = eraser(*argv, cwd=tmp_path)
    assert done.returncode == EXIT_OK, done.stderr
    assert masked(done.stdout) == COUNTED
    assert rows(cyclic_url, "tasks") == 12
    doc = json.loads(eraser(*argv, "--json", cwd=tmp_path).stdout)
    assert [s["table"] for s in doc["steps"]][-1] == "main.projects"
    assert {c["table"]: c["rows"] for c in doc["counts"] if c["action"] == "delete"} == {
        "main.categories": 3,
        "main.tasks": 8,
        "main.members": 6,
        "main.projects": 2,
    }


def test_erase_without_a_terminal_refuses_unless_yes(cyclic_url: str, tmp_path: Path) -> None:
    argv = ["erase", "--db", cyclic_url, "--subject-column", "tenant_id", "--subject", "1"]
    refused = eraser(*argv, cwd=tmp_path)
    assert refused.returncode == EXIT_ERROR
    assert refused.stderr == (
        "eraser: error: refusing to erase without confirmation: stdin is not a terminal; "
        "pass --yes to erase from a script\n"
    )
    assert rows(cyclic_url, "projects", "tenant_id = 1") == 2

    done = eraser(*argv, "--yes", cwd=tmp_path)
    assert done.returncode == EXIT_OK, done.stderr
    assert rows(cyclic_url, "projects", "tenant_id = 1") == 0
    assert rows(cyclic_url, "categories", "tenant_id = 1") == 0
    assert rows(cyclic_url, "members") == 3
    assert rows(cyclic_url, "tasks") == 4  # tenant 2's tasks stay,
    assert rows(cyclic_url, "tasks", "category_id IS NULL") == 3  # cleared of tenant 1's
    # Not a terminal: one plain progress line per table on stderr, no bar, no colour.
    lines = done.stderr.splitlines()
    assert lines, done.stderr
    assert all(line.startswith("progress: main.") for line in lines), lines
    assert "19/19 rows (100%)" in done.stderr
    assert "\x1b[" not in done.stdout + done.stderr
    assert "verified: no row of the subject remains" in done.stdout
    assert "main.tasks" in done.stdout

    again = eraser(*argv, "--yes", cwd=tmp_path)
    assert again.returncode == EXIT_NOTHING_MATCHED
    assert again.stdout == "nothing matched: the subject has no row in this database\n"


def _on_a_terminal(argv: list[str], answer: str, cwd: Path) -> tuple[int, str]:
    """Run ``eraser`` with a pseudo-terminal for stdin/stdout/stderr, type ``answer``
    once it asks; its exit status and everything it showed."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [str(ERASER), *argv],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        cwd=cwd,
        env=clean_env(TERM="dumb"),
        close_fds=True,
    )
    os.close(secondary)
    shown = b""
    answered = False
    while True:
        ready, _, _ = select.select([primary], [], [], 60)
        if not ready:
            proc.kill()
            pytest.fail(f"no output for 60 s: {shown.decode(errors='replace')}")
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        shown += chunk
        if not answered and b"to erase: " in shown:
            os.write(primary, answer.encode() + b"\n")
            answered = True
    os.close(primary)
    return proc.wait(timeout=60), re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode())


@pytest.mark.parametrize(
    ("answer", "status", "left"),
    [
        ("1", EXIT_OK, 0),  # the subject's value
        ("yes", EXIT_OK, 0),  # or yes
        ("no", EXIT_ERROR, 2),  # anything else erases nothing
    ],
)
def test_erase_on_a_terminal_shows_the_counts_and_asks(
    cyclic_url: str, tmp_path: Path, answer: str, status: int, left: int
) -> None:
    argv = ["erase", "--db", cyclic_url, "--subject-column", "tenant_id", "--subject", "1"]
    code, shown = _on_a_terminal(argv, answer, tmp_path)
    assert code == status, shown
    before_prompt = shown.split("to erase: ")[0]
    assert "main.members" in before_prompt
    assert "This erases 19 row(s) of the subject" in before_prompt
    assert rows(cyclic_url, "projects", "tenant_id = 1") == left
    if status == EXIT_ERROR:
        assert "not confirmed" in shown
        assert rows(cyclic_url, "members") == 9


def test_quiet_shows_no_progress(cyclic_url: str, tmp_path: Path) -> None:
    argv = ["erase", "--db", cyclic_url, "--subject-column", "tenant_id", "--subject", "2"]
    done = eraser(*argv, "--yes", "--quiet", "--json", cwd=tmp_path)
    assert done.returncode == EXIT_OK, done.stderr
    assert done.stderr == ""
    assert json.loads(done.stdout)["nothing_matched"] is False


def test_an_environment_variable_sets_the_batch_size(cyclic_url: str, tmp_path: Path) -> None:
    argv = ["erase", "--db", cyclic_url, "--subject-column", "tenant_id", "--subject", "1"]
    done = eraser(*argv, "--yes", cwd=tmp_path, ERASER_BATCH_SIZE="0")
    assert done.returncode == EXIT_ERROR
    assert "--batch-size" in done.stderr
    assert done.stderr.count("\n") == 1
    assert rows(cyclic_url, "projects", "tenant_id = 1") == 2


@pytest.mark.parametrize(
    ("argv", "absent"),
    [
        # help: nothing of the engine, the job store or a server; in a pipe, no Rich
        (["--help"], ("sqlalchemy", "pydantic", "celery", "fastapi", "uvicorn", "rich")),
        # a command's help: no more (its group's flags are not converted by pydantic)
        (["worker", "--help"], ("sqlalchemy", "pydantic", "celery", "flower", "rich")),
        # the engine path: no server, no Celery
        (["plan", "--subject-column", "tenant_id"], ("celery", "fastapi", "uvicorn", "flower")),
    ],
    ids=["help", "worker-help", "plan"],
)
def test_commands_import_only_what_they_use(
    argv: list[str], absent: tuple[str, ...], sqlite_url: str, tmp_path: Path
) -> None:
    if argv[0] == "plan":
        argv = [*argv, "--db", sqlite_url]
    code = (
        "import sys; from api.cli import main; status = main(sys.argv[1:]);"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr);"
        "raise SystemExit(status)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env=clean_env(),
    )
    assert done.returncode == EXIT_OK, done.stderr
    loaded = set(done.stderr.split())
    assert loaded.isdisjoint(absent), sorted(loaded & set(absent))


def test_erase_on_a_terminal_says_nothing_matched_without_asking(
    cyclic_url: str, tmp_path: Path
) -> None:
    argv = ["erase", "--db", cyclic_url, "--subject-column", "tenant_id", "--subject", "99"]
    code, shown = _on_a_terminal(argv, "yes", tmp_path)
    assert code == EXIT_NOTHING_MATCHED, shown
    assert "nothing matched: the subject has no row in this database" in shown
    assert "to erase: " not in shown
    assert rows(cyclic_url, "projects") == 3


def test_services_lists_each_kind_and_no_address(tmp_path: Path) -> None:
    """``eraser services``: every service of the bakery's registry with its kind, as a
    table and as JSON, naming the variables its address is read from, never a value."""
    registry = ROOT / "examples" / "bakery" / "services.toml"
    address = "postgresql://u:" + "hunter2" + "@db.internal/orders"
    table = eraser("services", "--config", str(registry), cwd=tmp_path, ORDERS_DATABASE_URL=address)
    assert table.returncode == 0, table.stderr
    assert "service" in table.stdout
    assert "kind" in table.stdout
    assert "hunter2" not in table.stdout + table.stderr
    listed = eraser("services", "--config", str(registry), "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    views = json.loads(listed.stdout)
    kinds = {v["name"]: v["kind"] for v in views}
    assert {"sql", "redis", "s3"} <= set(kinds.values())
    assert all(v["address_env"] for v in views)
    for v in views:
        assert v["name"] in table.stdout
