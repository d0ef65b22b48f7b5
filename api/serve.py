"""The work behind ``eraser api``: serve the HTTP API with uvicorn (embedded mode: with a
worker thread in the same process). ``api.cli.server`` declares the command and imports
this module when it runs."""

from __future__ import annotations

from pathlib import Path

from api.jobs import EXIT_OK, embedded_session, open_store, registry_of, settings_for
from models.keyring import require_secrets


def serve_api(config: Path | None, host: str, port: int) -> int:
    """Serve the HTTP API until interrupted."""
    import uvicorn  # noqa: PLC0415 - only this command needs the server

    from api.http import create_app  # noqa: PLC0415

    settings = settings_for(config)
    require_secrets(settings)  # a deployment's API refuses to start without its secrets
    registry = registry_of(settings)
    store = open_store(settings)
    if settings.log_format == "json":
        from worker.logs import use_json  # noqa: PLC0415

        use_json()
    try:
        with embedded_session(settings, registry, store):
            uvicorn.run(
                create_app(settings, store, registry),
                host=host,
                port=port,
                log_level="warning",
                access_log=False,
            )
    finally:
        store.dispose()
    return EXIT_OK
