"""``/metrics``: Prometheus figures from the job store and the broker (``api.metrics``).
No key, as Prometheus expects: expose it inside the cluster only."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.dependencies import Metrics

router = APIRouter(tags=["health"], include_in_schema=False)


@router.get("/metrics")
def metrics(registry: Metrics) -> Response:
    """Prometheus metrics in the text exposition format."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
