"""The console's services page: the registry as the API shows it (never a DSN), and on
request each service's plan summary (this connects to the databases)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from api.console.pages import ConsoleRoute, count_call, render
from api.console.session import SignedIn
from api.dependencies import AppRegistry, Limits
from api.rate_limits import Limit
from api.routes.services import plan_summary, services

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)


@router.get("/services")
def services_page(
    request: Request,
    operator: SignedIn,
    registry: AppRegistry,
    limits: Limits,
    plans: Annotated[bool, Query()] = False,
) -> Response:
    views = services(operator.key, registry)
    if plans:
        # Plans connect to every database: the API's expensive-call limit applies.
        count_call(limits, Limit.EXPENSIVE, operator.key.id)
        for view in views:
            view.plan, view.plan_error = plan_summary(registry, view.name)
    return render(
        request,
        "services.html",
        {"services": views, "plans": plans, "kinds": sorted(registry.subjects.items())},
        operator=operator,
    )
