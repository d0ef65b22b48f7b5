"""The client distribution (``deploy/client``, module ``eraser_client``): request messages
the worker accepts, and nothing but httpx to install."""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from models.messages import ErasureRequest

CLIENT_DIR = Path(__file__).resolve().parents[2] / "deploy" / "client"


@pytest.fixture(scope="module")
def eraser_client() -> ModuleType:
    """The client package from its source folder, as it would be installed."""
    package = CLIENT_DIR / "src" / "eraser_client"
    spec = importlib.util.spec_from_file_location(
        "eraser_client", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["eraser_client"] = module
    spec.loader.exec_module(module)
    return module


class _App:
    """A Celery app's ``send_task`` as seen by the broker: what was sent, and an id."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send_task(self, name: str, **options: Any) -> Any:
        self.sent.append((name, options))
        return type("Result", (), {"id": "message-1"})()


def test_a_request_message_is_one_the_worker_accepts(eraser_client: ModuleType) -> None:
    assert set(eraser_client.REQUEST_FIELDS) == set(ErasureRequest.model_fields)
    app = _App()
    message_id = eraser_client.submit_via_celery(
        app, "tenant", "t-42", services=["orders"], idempotency_key="k-1", reason="offboarding"
    )
    assert message_id == "message-1"
    ((name, options),) = app.sent
    assert (name, options["queue"]) == ("eraser.submit_request", "eraser.requests")
    assert (options["argsrepr"], options["kwargsrepr"]) == ("()", "{...}")
    request = ErasureRequest.model_validate(options["kwargs"])
    assert request.subject_value == "t-42"
    assert request.services == ["orders"]
    assert request.idempotency_key == "k-1"


def test_the_distribution_needs_httpx_only() -> None:
    project = tomllib.loads((CLIENT_DIR / "pyproject.toml").read_text())["project"]
    assert [d.split(">")[0] for d in project["dependencies"]] == ["httpx"]
    sources = {p.name for p in (CLIENT_DIR / "src").iterdir() if p.suffix != ".egg-info"}
    assert sources == {"eraser_client"}
