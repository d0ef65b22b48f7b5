"""How each secret setting is written, and the check that a value is one: the
certificate signing key (a private Ed25519 JWK or PEM), the JWKS of retired public keys,
the subject-hash pepper and the job-store encryption key (Fernet).

``models.settings`` validates its fields with these; ``models.keyring`` builds the keys
in use from the validated settings.
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

#: Shortest pepper accepted (characters): a short pepper can be guessed.
MIN_PEPPER_LENGTH = 32


class InvalidKey(ValueError):
    """A key setting holds something that is not the key it should be."""


def parse_signing_key(text: str) -> OKPKey:
    """A private Ed25519 key from a JWK (JSON) or PEM text."""
    value: str | dict[str, Any] = text.strip()
    if isinstance(value, str) and value.startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            raise InvalidKey("not a JSON object (a private Ed25519 JWK) nor PEM") from None
    try:
        key = OKPKey.import_key(value)
    except (JoseError, ValueError, TypeError):
        raise InvalidKey("not a private Ed25519 key (JWK or PEM)") from None
    if key.curve_name != "Ed25519" or not key.is_private:
        raise InvalidKey("the signing key must be a *private* Ed25519 key")
    return key


def parse_public_keys(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The public Ed25519 JWKs of a JWKS, each with its ``kid``; refuses private keys."""
    keys = document.get("keys")
    if not isinstance(keys, list):
        raise InvalidKey('a JWKS is a JSON object {"keys": [...]}')
    out = []
    for number, jwk in enumerate(keys):
        if not isinstance(jwk, dict) or "d" in jwk:
            raise InvalidKey(f"key {number}: must be a public JWK (no private part)")
        try:
            key = OKPKey.import_key(jwk)
        except (JoseError, ValueError, TypeError):
            raise InvalidKey(f"key {number}: not an Ed25519 public key") from None
        if key.curve_name != "Ed25519" or not jwk.get("kid"):
            raise InvalidKey(f"key {number}: must be an Ed25519 key with a kid")
        out.append(dict(jwk))
    return out


def parse_pepper(text: str) -> bytes:
    if len(text) < MIN_PEPPER_LENGTH:
        raise InvalidKey(f"the pepper must be at least {MIN_PEPPER_LENGTH} characters")
    return text.encode()


def parse_encryption_key(text: str) -> bytes:
    """A Fernet key (32 bytes, URL-safe base64), as ``Fernet.generate_key`` makes."""
    try:
        Fernet(text.strip().encode())
    except (ValueError, TypeError):
        raise InvalidKey("not a Fernet key (32 bytes, URL-safe base64)") from None
    return text.strip().encode()
