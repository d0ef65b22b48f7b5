"""Failures of a store that is not a SQL database (Redis, S3), one class each.

Messages name the service, the operation and the server's error code, never a key, an
object name or the subject's value: keys and object names usually hold that value.
``worker.faults.classify`` sorts them by ``transient`` like every ``EraserError``.
"""

from __future__ import annotations

from worker.exceptions import EraserError


class StoreUnavailable(EraserError):
    """The store could not be reached, or dropped the connection: retry later."""

    transient = True

    def __init__(self, service: str, kind: str, reason: str) -> None:
        super().__init__(f"cannot reach the {kind} store of {service}: {reason}")
        self.service = service


class StoreRefused(EraserError):
    """The store refused an operation (permissions, a missing bucket): retrying cannot help."""

    def __init__(self, service: str, kind: str, operation: str, code: str) -> None:
        super().__init__(f"the {kind} store of {service} refused {operation}: {code}")
        self.service = service
        self.code = code


class InvalidStoreUrl(EraserError):
    """The environment variable the registry names does not hold a usable URL."""

    def __init__(self, variable: str, expected: str) -> None:
        super().__init__(f"{variable} must hold a URL of the form {expected}")
        self.variable = variable


class SubjectValueRefused(EraserError):
    """The subject's value would name other subjects' keys or objects in this service."""

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(f"the subject value cannot be used in {service}: it {reason}")
        self.service = service


class InvalidStoreSecret(EraserError):
    """The environment variable the registry names does not hold a usable signing secret
    (the message never quotes it)."""

    def __init__(self, variable: str) -> None:
        super().__init__(
            f"{variable} must hold a base64 signing secret, optionally prefixed whsec_"
        )
        self.variable = variable
