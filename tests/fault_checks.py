"""What every test of ``worker.faults.classify`` needs: values that must never reach a
fault's description, the exception an action raises, and the check that a description
(stored and shown) names objects but no row value, key or address."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa

from worker.database import create_engine
from worker.faults import Fault, classify

#: A row value the provoked failures involve.
ROW_VALUE = "alice-7c1f@example.com"
#: A key the provoked failures involve.
KEY = 987654321


def raised(action: Callable[[], object]) -> BaseException:
    """The exception ``action`` raises (the test fails if it raises none)."""
    try:
        action()
    except Exception as exc:
        return exc
    pytest.fail("expected the action to fail")


def assert_safe(fault: Fault, *secrets: str) -> None:
    """One line, and none of ``ROW_VALUE``, ``KEY``, the host or ``secrets`` in it."""
    assert "\n" not in fault.description
    for secret in (ROW_VALUE, str(KEY), "127.0.0.1", *secrets):
        assert secret not in fault.description


def connection_fault(url: str | sa.URL) -> Fault:
    """The fault of a first connection to ``url`` (which must fail)."""
    engine = create_engine(url, pool_pre_ping=False)
    try:
        return classify(raised(engine.connect))
    finally:
        engine.dispose()
