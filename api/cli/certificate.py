"""``eraser certificate keygen|public-key|show|verify``: signed evidence of finished jobs
(Ed25519 compact JWS) and the keys that sign and verify it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from api.cli.errors import EXIT_ERROR, EXIT_OK, EXIT_UNVERIFIED, fail
from api.cli.help import Command, Group
from api.cli.options import Config

app = typer.Typer(
    help="Erasure certificates (Ed25519 JWS) and their keys.", no_args_is_help=True, cls=Group
)


def _print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


@app.command("keygen", cls=Command)
def keygen() -> int:
    """Make a signing key pair: the private JWK (keep it secret) and its public JWKS."""
    from api import certificates  # noqa: PLC0415 - start-up time

    private, public = certificates.keygen()
    _print_json({"kid": private["kid"], "private_jwk": private, "public_jwks": public})
    return EXIT_OK


@app.command("public-key", cls=Command)
def public_key(config: Config = None) -> int:
    """Print the JWKS that verifies this deployment's certificates (current key first)."""
    from api import certificates  # noqa: PLC0415 - start-up time
    from api.jobs import settings_for  # noqa: PLC0415

    _print_json(certificates.public_key(settings_for(config)))
    return EXIT_OK


@app.command("show", cls=Command)
def show(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="A finished job's id.")],
    config: Config = None,
) -> int:
    """Print a finished job's certificate (a compact JWS)."""
    from api import certificates  # noqa: PLC0415 - start-up time
    from api.jobs import open_store, settings_for  # noqa: PLC0415

    settings = settings_for(config)
    store = open_store(settings)
    try:
        sys.stdout.write(certificates.certificate_of(store, settings, job_id) + "\n")
    finally:
        store.dispose()
    return EXIT_OK


@app.command("verify", cls=Command)
def verify(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A certificate ('-' reads stdin).")],
    jwks: Annotated[
        str,
        typer.Option(
            "--jwks",
            metavar="FILE_OR_URL",
            help="The public keys (a JWKS file or URL).",
            show_default=False,
        ),
    ],
) -> int:
    """Verify a certificate with public keys only (no secret): exit 0 valid, 1 not."""
    from api import certificates  # noqa: PLC0415 - start-up time

    name = str(file)
    try:
        text = sys.stdin.read() if name == "-" else file.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        fail(f"{name}: cannot read the certificate ({type(exc).__name__})")
        return EXIT_ERROR
    try:
        seen = certificates.verify(certificates.read_token(text), jwks)
    except certificates.InvalidCertificate as exc:
        fail(f"{name}: NOT valid: {exc}")
        return EXIT_UNVERIFIED
    dev = " (signed with a development key: not evidence)" if seen.dev else ""
    sys.stdout.write(
        f"{name}: valid: job {seen.claims.get('job_id')}, {seen.claims.get('status')}, "
        f"key {seen.header.get('kid')}{dev}\n"
    )
    return EXIT_OK
