"""``eraser api|keys``: serve the HTTP API, make API keys.

- ``eraser api [--host H] [--port P]`` serves the API with uvicorn (embedded mode: with
  a worker thread in the same process).
- ``eraser keys create --name NAME --scope SCOPE ... [--json]`` prints a new secret once
  and the entry to add to ``ERASER_API_KEYS`` (a JSON list of entries).
- ``eraser flower-proxy [--host H] [--port P]`` serves Flower read-only, behind
  authentication (see ``api.flowerproxy``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from api.jobs import EXIT_JOB_FAILED, EXIT_OK, _registry, _settings, _store, embedded_session
from api.keys import Scope, create_key
from models.keyring import require_secrets


def add_commands(sub: Any) -> None:
    serve = sub.add_parser("api", help="serve the HTTP API (uvicorn)")
    serve.add_argument("--config", type=Path, metavar="FILE", help="registry (ERASER_CONFIG)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(handler=cmd_api)

    flower = sub.add_parser("flower-proxy", help="Flower behind authentication, read-only")
    flower.add_argument("--host", default="127.0.0.1")
    flower.add_argument("--port", type=int, default=5555)
    flower.set_defaults(handler=cmd_flower_proxy)

    keys = sub.add_parser("keys", help="API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser("create", help="make a key: its secret is shown once")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=[s.value for s in Scope],
        help="repeat for several scopes",
    )
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=cmd_keys_create)


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415 - only this command needs the server

    from api.http import create_app  # noqa: PLC0415

    settings = _settings(args)
    require_secrets(settings)  # a deployment's API refuses to start without its secrets
    registry = _registry(settings)
    store = _store(settings)
    if settings.log_format == "json":
        from worker.logs import use_json  # noqa: PLC0415

        use_json()
    try:
        with embedded_session(settings, registry, store):
            uvicorn.run(
                create_app(settings, store, registry),
                host=args.host,
                port=args.port,
                log_level="warning",
                access_log=False,
            )
    finally:
        store.dispose()
    return EXIT_OK


def cmd_flower_proxy(args: argparse.Namespace) -> int:
    from api.flowerproxy import serve  # noqa: PLC0415 - only this command needs the proxy

    serve(args.host, args.port)
    return EXIT_OK


def cmd_keys_create(args: argparse.Namespace) -> int:
    key = create_key(args.name, [Scope(s) for s in args.scope])
    entry = key.entry.model_dump()
    if args.json:
        sys.stdout.write(json.dumps({"id": key.id, "secret": key.secret, "entry": entry}) + "\n")
        return EXIT_OK
    sys.stdout.write(
        f"key {key.id} ({args.name}): {', '.join(entry['scopes'])}\n"
        f"secret (shown once, give it to the client): {key.secret}\n"
        f"add this entry to ERASER_API_KEYS (a JSON list):\n{json.dumps(entry)}\n"
    )
    return EXIT_OK


def add_health(sub: Any) -> None:
    health = sub.add_parser("health", help="liveness checks for orchestrators")
    health_sub = health.add_subparsers(dest="health_command", required=True, metavar="WHAT")
    worker = health_sub.add_parser("worker", help="is the worker's liveness file fresh?")
    worker.add_argument("--file", type=Path, help="default: ERASER_LIVENESS_FILE")
    worker.add_argument("--max-age", type=float, default=60.0, metavar="SECONDS")
    worker.set_defaults(handler=cmd_health_worker)


def cmd_health_worker(args: argparse.Namespace) -> int:
    from worker.liveness import age  # noqa: PLC0415

    path = args.file or _settings(args).liveness_file
    if path is None:
        sys.stdout.write("unhealthy: no liveness file (--file or ERASER_LIVENESS_FILE)\n")
        return EXIT_JOB_FAILED
    seconds = age(path)
    if seconds is None:
        sys.stdout.write(f"unhealthy: {path} is missing or unreadable\n")
        return EXIT_JOB_FAILED
    if seconds > args.max_age:
        sys.stdout.write(f"unhealthy: last beat {seconds:.0f}s ago (max {args.max_age:g}s)\n")
        return EXIT_JOB_FAILED
    sys.stdout.write(f"healthy: last beat {seconds:.1f}s ago\n")
    return EXIT_OK
