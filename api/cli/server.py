"""``eraser api|flower-proxy|health``: the long-running processes and their probes.
uvicorn, FastAPI and Flower are imported only by the command that serves them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from api.cli.errors import EXIT_OK, EXIT_UNVERIFIED
from api.cli.help import Command, Group
from api.cli.options import Config

PANEL = "Servers"

#: ``eraser health worker``: the liveness file is missing or stale.
EXIT_UNHEALTHY = EXIT_UNVERIFIED

health_app = typer.Typer(help="Liveness checks for orchestrators.", no_args_is_help=True, cls=Group)

Host = Annotated[str, typer.Option("--host", metavar="HOST", help="Address to listen on.")]


def api(
    config: Config = None,
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="Port to listen on.")] = 8000,
) -> int:
    """Serve the HTTP API with uvicorn (embedded: with a worker thread in-process)."""
    from api.serve import serve_api  # noqa: PLC0415 - start-up time

    return serve_api(config, host, port)


def flower_proxy(
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="Port to listen on.")] = 5555,
) -> int:
    """Serve Flower read-only, behind authentication.

    Reads ERASER_FLOWER_USERS and ERASER_FLOWER_UPSTREAM."""
    from api.flowerproxy import serve  # noqa: PLC0415 - start-up time

    serve(host, port)
    return EXIT_OK


@health_app.command("worker", cls=Command)
def health_worker(
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            metavar="FILE",
            envvar="ERASER_LIVENESS_FILE",
            help="The worker's liveness file.",
            show_default=False,
        ),
    ] = None,
    max_age: Annotated[
        float,
        typer.Option(
            "--max-age", metavar="SECONDS", min=0, help="Older than this is unhealthy (exit 1)."
        ),
    ] = 60.0,
) -> int:
    """Is the worker's liveness file fresh? Exit 0 healthy, 1 not."""
    from worker.liveness import age  # noqa: PLC0415 - start-up time

    if file is None:
        from models.settings import get_settings  # noqa: PLC0415

        file = get_settings().liveness_file
    if file is None:
        return _unhealthy("no liveness file (--file or ERASER_LIVENESS_FILE)")
    seconds = age(file)
    if seconds is None:
        return _unhealthy(f"{file} is missing or unreadable")
    if seconds > max_age:
        return _unhealthy(f"last beat {seconds:.0f}s ago (max {max_age:g}s)")
    sys.stdout.write(f"healthy: last beat {seconds:.1f}s ago\n")
    return EXIT_OK


def _unhealthy(why: str) -> int:
    sys.stdout.write(f"unhealthy: {why}\n")
    return EXIT_UNHEALTHY


def register(app: typer.Typer) -> None:
    """Add the servers and their probes to the root app."""
    app.command("api", cls=Command, rich_help_panel=PANEL)(api)
    app.command("flower-proxy", cls=Command, rich_help_panel=PANEL)(flower_proxy)
    app.add_typer(health_app, name="health", rich_help_panel=PANEL)
