"""The ``eraser`` command line.

One-database mode drives the engine directly, without Celery:

    eraser plan  --db URL --subject-column COL --subject VALUE [--json]
    eraser erase --db URL --subject-column COL --subject VALUE [--dry-run] [--json]

Errors print one line (``eraser: error: ...``) and exit non-zero; no traceback, no DSN
password, no subject value.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import sqlalchemy as sa
from pydantic import ValidationError

from api import certificates, ops, serve
from api.demo import DemoRefused, run_demo
from api.jobs import EmbeddedOnly, JobNotFound, _settings, _store, add_commands
from models.certificate import CertificateError
from models.erasure import ErasureReport, ScalarValue, TableAction, TablePolicy
from models.keyring import MissingSecrets
from models.registry import RegistryError
from models.settings import MissingDatabaseUrl
from tasks.submit import SubmitError
from worker.catalog import reflect
from worker.database import check_connection, create_engine, describe_database_error, redact
from worker.exceptions import DatabaseUnavailable, EraserError
from worker.executor import FK_CHECKS, ExecutionOptions, Progress, dry_run, erase
from worker.planner import Plan, build_plan

EXIT_OK = 0
#: The erasure ran but a final count still found rows of the subject.
EXIT_UNVERIFIED = 1
#: Bad input, an unreachable database, or a plan that cannot run.
EXIT_ERROR = 2


#: Failures a user can meet: one line each, exit status 2.
_USER_ERRORS = (
    EraserError,
    RegistryError,
    SubmitError,
    JobNotFound,
    EmbeddedOnly,
    ops.LetterNotFound,
    certificates.CertificateRefused,
    certificates.JwksUnavailable,
    MissingSecrets,
    CertificateError,
    DemoRefused,
    MissingDatabaseUrl,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "worker":
        args.extra = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        result: int = args.handler(args)
    except _USER_ERRORS as exc:
        _fail(str(exc))
        return EXIT_ERROR
    except ValidationError as exc:
        first = exc.errors()[0]
        _fail(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}")
        return EXIT_ERROR
    except sa.exc.DBAPIError as exc:
        _fail(describe_database_error(exc))
        return EXIT_ERROR
    except sa.exc.StatementError as exc:
        # Raised before the statement reached the database (a value its driver cannot
        # send); the original message may quote the value, so only its class is shown.
        _fail(f"a statement's parameters were refused ({type(exc.orig).__name__})")
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_OK  # the reader (head, less) went away
    except KeyboardInterrupt:
        _fail("interrupted; committed batches stay done, run the command again to finish")
        return 130
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eraser",
        description="Erase a subject (tenant, user, entity) from relational databases.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def target(p: argparse.ArgumentParser) -> None:
        db = p.add_mutually_exclusive_group(required=True)
        db.add_argument(
            "--db", metavar="URL", help="database URL (postgresql://, mysql://, sqlite:///)"
        )
        db.add_argument(
            "--db-env", metavar="VAR", help="name of an environment variable holding the URL"
        )
        p.add_argument(
            "--subject-column",
            action="append",
            required=True,
            metavar="COL",
            help="subject column: COL, TABLE.COL or SCHEMA.TABLE.COL (repeatable)",
        )
        p.add_argument("--subject", required=True, metavar="VALUE", help="the subject's value")
        p.add_argument(
            "--schema", action="append", metavar="NAME", help="schema to reflect (repeatable)"
        )
        p.add_argument(
            "--policy",
            action="append",
            default=[],
            metavar="TABLE=ACTION",
            help="keep | unlink | delete_if_orphaned | anonymize:COL=VALUE,... (repeatable)",
        )
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    plan = sub.add_parser("plan", help="print the ordered erasure steps")
    target(plan)
    plan.set_defaults(handler=_cmd_plan)

    run = sub.add_parser("erase", help="erase the subject (or count, with --dry-run)")
    target(run)
    run.add_argument(
        "--dry-run", action="store_true", help="count only, in a read-only transaction"
    )
    run.add_argument("--batch-size", type=_positive_int, default=2000, metavar="N")
    run.add_argument(
        "--lock-timeout-ms",
        type=_positive_int,
        default=5000,
        metavar="MS",
        help="how long one batch waits for a row lock",
    )
    run.add_argument(
        "--fk-checks",
        choices=list(FK_CHECKS),
        default="auto",
        help="who checks references into removed rows: the database's triggers, or "
        "Eraser under the batch's row locks (PostgreSQL; faster). auto: Eraser when the "
        "role may set session_replication_role",
    )
    run.add_argument(
        "--server-batches",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="PostgreSQL: run the commonest walks' batches inside the server, many to a "
        "round trip (--no-server-batches: every statement from here)",
    )
    run.add_argument(
        "--compress-wal",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="PostgreSQL: write the batches' full-page images to the WAL compressed (lz4), "
        "where the role may set wal_compression and the server does not compress already",
    )
    run.add_argument("--progress", choices=["auto", "always", "never"], default="auto")
    run.set_defaults(handler=_cmd_erase)

    demo = sub.add_parser(
        "demo",
        help="erase one tenant from the 12-service bakery estate through the chord (no server)",
    )
    demo.add_argument("--tenant", type=int, default=2, help="the tenant to erase (1..tenants)")
    demo.add_argument("--tenants", type=int, default=5)
    demo.add_argument("--scale", type=float, default=1.0, help="rows per tenant, relative")
    demo.add_argument("--workdir", type=Path, help="keep the databases here (default: temp)")
    demo.set_defaults(handler=_cmd_demo)
    add_commands(sub)
    ops.add_commands(sub)
    serve.add_commands(sub)
    serve.add_health(sub)
    _add_certificate_commands(sub)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _url(args: argparse.Namespace) -> str:
    if args.db is not None:
        return str(args.db)
    value = os.environ.get(args.db_env)
    if not value:
        raise DatabaseUnavailable(f"${args.db_env}", "the environment variable is not set")
    return value


def parse_policy(text: str) -> tuple[str, TablePolicy]:
    """``TABLE=keep`` or ``TABLE=anonymize:col=null,col2=erased`` -> (table, policy)."""
    table, sep, spec = text.partition("=")
    if not sep or not table:
        raise EraserError(f"--policy {text!r}: expected TABLE=ACTION")
    action_text, _, assignments = spec.partition(":")
    try:
        action = TableAction(action_text.strip())
    except ValueError:
        choices = ", ".join(a.value for a in TableAction if a is not TableAction.NULLIFY)
        raise EraserError(f"--policy {text!r}: unknown action (one of {choices})") from None
    values: dict[str, ScalarValue] = {}
    for item in filter(None, (a.strip() for a in assignments.split(","))):
        col, eq, raw = item.partition("=")
        if not eq:
            raise EraserError(f"--policy {text!r}: expected COL=VALUE in {item!r}")
        values[col.strip()] = _scalar(raw.strip())
    return table.strip(), TablePolicy(action=action, set=values)


def _scalar(raw: str) -> ScalarValue:
    if raw.lower() == "null":
        return None
    try:
        parsed = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(parsed, str | int | float | bool):
        return parsed
    return raw


def _load_plan(args: argparse.Namespace) -> tuple[sa.Engine, Plan]:
    url = _url(args)
    engine = create_engine(url, existing=True)
    check_connection(engine)
    policies = dict(parse_policy(p) for p in args.policy)
    try:
        catalog = reflect(engine, args.schema)
    except sa.exc.OperationalError as exc:
        raise DatabaseUnavailable(redact(url), describe_database_error(exc)) from None
    return engine, build_plan(catalog, args.subject_column, policies)


def _cmd_plan(args: argparse.Namespace) -> int:
    engine, plan = _load_plan(args)
    engine.dispose()
    if args.json:
        _print_json(plan.as_dict())
        return EXIT_OK
    out = sys.stdout
    out.write(f"Plan ({plan.catalog.dialect}, schema {plan.fingerprint[:19]}):\n")
    width = max((len(str(s.table)) for s in plan.steps), default=10)
    for i, step in enumerate(plan.steps, 1):
        marker = "*" if step.anchor else " "
        out.write(f"{i:>3}. {marker}{step.table!s:<{width}}  {step.action:<18} {step.predicate}\n")
    for cycle in plan.cycles:
        out.write(f"cycle {' -> '.join(cycle.path)}: {cycle.strategy.value}\n")
    for warning in plan.warnings:
        out.write(f"warning: {warning}\n")
    out.write("(* = anchor: its rows are read directly; the others through references)\n")
    return EXIT_OK


def _cmd_erase(args: argparse.Namespace) -> int:
    engine, plan = _load_plan(args)
    try:
        if args.dry_run:
            report = dry_run(engine, plan, args.subject)
        else:
            options = ExecutionOptions(
                batch_size=args.batch_size,
                lock_timeout_ms=args.lock_timeout_ms,
                fk_checks=args.fk_checks,
                server_batches=args.server_batches,
                compress_wal=args.compress_wal,
            )
            show = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
            bar = _ProgressLine(sys.stderr) if show else None
            report = erase(engine, plan, args.subject, options, bar)
            if bar is not None:
                bar.close()
    finally:
        engine.dispose()
    if args.json:
        _print_json(_report_json(report))
    else:
        _print_report(report, sys.stdout)
    if not report.dry_run and not report.verified:
        return EXIT_UNVERIFIED
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    if not 1 <= args.tenant <= args.tenants:
        raise DemoRefused(f"--tenant must be between 1 and --tenants ({args.tenants})")
    ok = run_demo(
        sys.stdout, args.workdir, subject=args.tenant, tenants=args.tenants, scale=args.scale
    )
    return EXIT_OK if ok else EXIT_UNVERIFIED


def _report_json(report: ErasureReport) -> dict[str, Any]:
    return {
        "dry_run": report.dry_run,
        "tables": [
            {"table": t.table, "action": t.action.value, "rows": t.rows} for t in report.tables
        ],
        "total_rows": report.total_rows,
        "verified": report.verified,
        "passes": report.passes,
        "schema_fingerprint": report.schema_fingerprint,
        "elapsed_seconds": report.elapsed_seconds,
        "warnings": report.warnings,
        "checked_by_eraser": report.checked_by_eraser,
        "batched_in_server": report.batched_in_server,
        "wal_compression": report.wal_compression,
    }


def _print_report(report: ErasureReport, out: TextIO) -> None:
    title = "Dry run (nothing written)" if report.dry_run else "Erasure"
    out.write(f"{title}: {report.total_rows} row(s) in {report.elapsed_seconds:.2f}s\n")
    width = max((len(t.table) for t in report.tables), default=10)
    for t in report.tables:
        out.write(f"  {t.table:<{width}}  {t.action.value:<18} {t.rows:>10}\n")
    if not report.dry_run:
        state = "verified: no row of the subject remains" if report.verified else "NOT verified"
        out.write(f"{state} ({report.passes} pass(es))\n")
    for warning in report.warnings:
        out.write(f"warning: {warning}\n")


class _ProgressLine:
    """A one-line progress display on a terminal, redrawn at most ten times a second."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = 0.0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if now - self.last < 0.1:
            return
        self.last = now
        rate = p.total_rows / p.elapsed_seconds if p.elapsed_seconds > 0 else 0.0
        line = f"{p.total_rows:>10} rows  {rate:>9.0f} rows/s  {p.table} ({p.action.value})"
        self.stream.write("\r" + line[:78].ljust(78))
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\r" + " " * 78 + "\r")
        self.stream.flush()


def _print_json(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


def _fail(message: str) -> None:
    sys.stderr.write(f"eraser: error: {message}\n")


# --- certificates and secrets (plain functions in api.certificates) -------------------------


def _add_certificate_commands(sub: Any) -> None:
    """``eraser certificate keygen|public-key|show|verify`` and ``eraser secrets generate``."""
    cert = sub.add_parser("certificate", help="erasure certificates (Ed25519 JWS)")
    actions = cert.add_subparsers(dest="cert_command", required=True, metavar="ACTION")
    keygen = actions.add_parser("keygen", help="make a signing key pair (private JWK, JWKS)")
    keygen.set_defaults(handler=_cmd_certificate_keygen)
    public = actions.add_parser("public-key", help="print the JWKS that verifies certificates")
    public.set_defaults(handler=_cmd_certificate_public_key)
    show = actions.add_parser("show", help="print a finished job's certificate (a JWS)")
    show.add_argument("job_id", metavar="JOB_ID")
    show.set_defaults(handler=_cmd_certificate_show)
    check = actions.add_parser("verify", help="verify a certificate against public keys")
    check.add_argument("file", type=Path, metavar="FILE", help="a certificate ('-': stdin)")
    check.add_argument("--jwks", required=True, metavar="FILE_OR_URL", help="the public keys")
    check.set_defaults(handler=_cmd_certificate_verify)
    secrets = sub.add_parser("secrets", help="the secrets a deployment needs")
    secrets_actions = secrets.add_subparsers(dest="secrets_command", required=True)
    generate = secrets_actions.add_parser("generate", help="fresh values for every secret")
    generate.add_argument("--env", action="store_true", help="as export lines (the default)")
    generate.set_defaults(handler=_cmd_secrets_generate)


def _cmd_certificate_keygen(_args: argparse.Namespace) -> int:
    private, public = certificates.keygen()
    _print_json({"kid": private["kid"], "private_jwk": private, "public_jwks": public})
    return EXIT_OK


def _cmd_certificate_public_key(args: argparse.Namespace) -> int:
    _print_json(certificates.public_key(_settings(args)))
    return EXIT_OK


def _cmd_certificate_show(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = _store(settings)
    try:
        sys.stdout.write(certificates.certificate_of(store, settings, args.job_id) + "\n")
    finally:
        store.dispose()
    return EXIT_OK


def _cmd_certificate_verify(args: argparse.Namespace) -> int:
    name = str(args.file)
    try:
        text = sys.stdin.read() if name == "-" else args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        _fail(f"{name}: cannot read the certificate ({type(exc).__name__})")
        return EXIT_ERROR
    try:
        seen = certificates.verify(certificates.read_token(text), args.jwks)
    except certificates.InvalidCertificate as exc:
        _fail(f"{name}: NOT valid: {exc}")
        return EXIT_UNVERIFIED
    dev = " (signed with a development key: not evidence)" if seen.dev else ""
    sys.stdout.write(
        f"{name}: valid: job {seen.claims.get('job_id')}, {seen.claims.get('status')}, "
        f"key {seen.header.get('kid')}{dev}\n"
    )
    return EXIT_OK


def _cmd_secrets_generate(_args: argparse.Namespace) -> int:
    sys.stdout.write(certificates.generate_secrets_env())
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
