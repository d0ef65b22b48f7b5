"""The deployment's secrets: the certificate signing key, the public keys that verify
older certificates, the subject-hash pepper and the job-store encryption key.

A deployment (any broker other than the in-process ``memory://``) must set all of
them: ``require_secrets`` names what is missing in one line, and the API and the
workers call it before they take any work. The embedded default needs no
configuration: what is missing there is derived from the job store's URL, so every
process of one embedded install agrees on it, and everything signed with such a key
is marked ``dev`` (anyone can derive the same key: it proves nothing to a third party).

Keys are parsed by ``joserfc`` and ``cryptography`` (``models.secret_formats``, which
the settings validate with); nothing here implements crypto.
"""

from __future__ import annotations

import base64
import json
import secrets
import sys
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc.jwk import OKPKey

from models.secret_formats import parse_signing_key
from models.settings import Settings, get_settings

#: The JWS algorithm of certificates (RFC 8037: Ed25519 under ``EdDSA``).
ALGORITHM = "EdDSA"
#: Key ids of derived development keys start with this.
DEV_KID_PREFIX = "dev-"

#: Setting name -> environment variable, for every secret a deployment needs.
SECRET_VARIABLES = {
    "certificate_signing_key": "ERASER_CERTIFICATE_SIGNING_KEY",
    "subject_hash_pepper": "ERASER_SUBJECT_HASH_PEPPER",
    "job_store_encryption_key": "ERASER_JOB_STORE_ENCRYPTION_KEY",
}


class MissingSecrets(Exception):
    """A deployment was started without the secrets it needs (one line, names them)."""

    def __init__(self, variables: list[str]) -> None:
        super().__init__(
            f"missing {', '.join(variables)}: a deployment (ERASER_BROKER_URL set) needs "
            'them; eval "$(eraser secrets generate --env)" makes a set'
        )
        self.variables = variables


@dataclass(frozen=True)
class Keyring:
    """The secrets in use, parsed. ``dev``: at least one of them was derived."""

    signing_key: OKPKey
    kid: str
    pepper: bytes
    job_store_key: bytes
    #: Public JWKs (dicts) of retired signing keys, still served and trusted.
    retired: tuple[dict[str, Any], ...]
    dev: bool

    def public_jwks(self) -> dict[str, Any]:
        """The JWKS third parties verify with: the current key first, then retired ones."""
        current = self.signing_key.as_dict(private=False, kid=self.kid, use="sig", alg=ALGORITHM)
        others = [k for k in self.retired if k.get("kid") != self.kid]
        return {"keys": [dict(current), *others]}


def key_id(key: OKPKey) -> str:
    """A key's id: the one its JWK names, else its RFC 7638 thumbprint."""
    return key.kid or key.thumbprint()


def missing_secrets(settings: Settings) -> list[str]:
    """The environment variables of the secrets that are not set."""
    return [env for name, env in SECRET_VARIABLES.items() if getattr(settings, name) is None]


def require_secrets(settings: Settings) -> None:
    """Refuse (``MissingSecrets``) a deployment without its secrets; embedded passes."""
    missing = missing_secrets(settings)
    if missing and not settings.embedded:
        raise MissingSecrets(missing)


def exit_without_secrets(**_signal: object) -> None:
    """A ``celeryd_init`` receiver: a deployment's worker exits (status 2) with one
    line naming the missing secrets before it takes any task. ``SystemExit``, because
    Celery logs and swallows the ``Exception``s its signal receivers raise."""
    try:
        require_secrets(get_settings())
    except MissingSecrets as exc:
        sys.stderr.write(f"eraser: error: {exc}\n")
        raise SystemExit(2) from None


def keyring(settings: Settings) -> Keyring:
    """The secrets to use now; derived ones (embedded only) mark the keyring ``dev``."""
    require_secrets(settings)
    seed = settings.database_url.encode()
    signing = settings.certificate_signing_key
    if signing is not None:
        key = parse_signing_key(signing.get_secret_value())
        kid = key_id(key)
    else:
        key = OKPKey.import_key(Ed25519PrivateKey.from_private_bytes(_derive(seed, b"signing")))
        kid = DEV_KID_PREFIX + key.thumbprint()
    pepper = settings.subject_hash_pepper
    store_key = settings.job_store_encryption_key
    return Keyring(
        signing_key=key,
        kid=kid,
        pepper=pepper.get_secret_value().encode() if pepper else _derive(seed, b"pepper"),
        job_store_key=(
            store_key.get_secret_value().strip().encode()
            if store_key
            else base64.urlsafe_b64encode(_derive(seed, b"job store"))
        ),
        retired=tuple(settings.certificate_public_keys.keys),
        dev=bool(missing_secrets(settings)),
    )


def new_signing_key() -> dict[str, Any]:
    """A fresh private Ed25519 JWK, its ``kid`` the RFC 7638 thumbprint."""
    key = OKPKey.generate_key("Ed25519")
    return dict(key.as_dict(private=True, kid=key.thumbprint(), use="sig", alg=ALGORITHM))


def public_part(private_jwk: dict[str, Any]) -> dict[str, Any]:
    """The public JWK of a private one (same ``kid``, ``use`` and ``alg``)."""
    return {k: v for k, v in private_jwk.items() if k != "d"}


def new_secrets() -> dict[str, str]:
    """A fresh value for every secret a deployment needs, by environment variable."""
    return {
        SECRET_VARIABLES["certificate_signing_key"]: json.dumps(
            new_signing_key(), separators=(",", ":")
        ),
        SECRET_VARIABLES["subject_hash_pepper"]: secrets.token_urlsafe(32),
        SECRET_VARIABLES["job_store_encryption_key"]: Fernet.generate_key().decode(),
    }


def _derive(seed: bytes, purpose: bytes) -> bytes:
    """32 bytes for one development secret (HKDF-SHA256 of the job store's URL)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"eraser embedded", info=purpose).derive(
        seed
    )
