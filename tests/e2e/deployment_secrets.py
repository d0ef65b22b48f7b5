"""One set of deployment secrets per test process, for the e2e deployments whose
workers run as separate processes: the workers get them as environment variables,
and the test process's job store seals and opens subject values with the same keys
(a job submitted by the test must be readable by the worker, and the other way)."""

from __future__ import annotations

from models.keyring import new_secrets
from models.settings import Settings
from models.store.sealing import SubjectSeal, subject_seal

#: ``eraser secrets generate``'s variables, made once for this process.
SECRETS = new_secrets()


def seal_of(secrets: dict[str, str], broker_url: str = "redis://127.0.0.1:1/0") -> SubjectSeal:
    """The seal a deployment with ``secrets`` uses."""
    values = {k.removeprefix("ERASER_").lower(): v for k, v in secrets.items()}
    return subject_seal(Settings(_env_file=None, broker_url=broker_url, **values))  # type: ignore[call-arg]
