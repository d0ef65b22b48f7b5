"""The harness's own connections: every statement bounded by the server.

The harness loads, reads and cascades on shared servers, so each of its sessions
carries a server-side limit (PostgreSQL ``statement_timeout``, MariaDB
``max_statement_time``): a statement that would run away is stopped by the server.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from worker.database import create_engine

#: Seconds any one statement of the harness (or of Eraser, see ``erasure``) may take.
#: Short: one runaway statement of Eraser's grew MariaDB by about 1 GB a second.
STATEMENT_SECONDS = 10


def bounded_engine(url: str) -> sa.Engine:
    """An engine on ``url`` whose sessions time statements out after ``STATEMENT_SECONDS``."""
    engine = create_engine(url)
    backend = engine.url.get_backend_name()
    if backend == "sqlite":
        return engine

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if backend == "postgresql":
                cursor.execute(f"SET statement_timeout = '{STATEMENT_SECONDS}s'")
            else:
                cursor.execute(f"SET SESSION max_statement_time = {STATEMENT_SECONDS}")
        finally:
            cursor.close()
        dbapi_connection.commit()

    return engine


def bounded_url(url: str, seconds: int = STATEMENT_SECONDS) -> str:
    """``url`` with a limit of ``seconds`` in the options every new session starts
    with, for the connections Eraser opens itself."""
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        parsed = parsed.update_query_dict({"options": f"-c statement_timeout={seconds * 1000}"})
    elif backend in ("mysql", "mariadb"):
        parsed = parsed.update_query_dict(
            {"init_command": f"SET SESSION max_statement_time={seconds}"}
        )
    return parsed.render_as_string(hide_password=False)
