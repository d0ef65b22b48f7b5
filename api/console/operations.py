"""Operators' actions: retry a job's failed tasks, cancel its waiting ones, the list of
dead letters and their replay. Each asks for confirmation on a page of its own, needs
the admin scope and the form's CSRF token, and writes the audit event the API writes
(actor ``key:<id>``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from api.console.pages import ConsoleRoute, PageError, read_form, render
from api.console.session import SignedIn, check_csrf, require
from api.console.views import load
from api.dependencies import AppRegistry, AppSettings, Store
from api.keys import Scope
from models.store import queries
from tasks.submit import RetryRefused, cancel_job, replay_dead_letter, retry_job

router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)

#: The actions on a job: what the confirmation page says.
ACTIONS = {
    "retry": "Run the job's failed tasks again (each keeps the rows it already removed).",
    "cancel": "Cancel the job's tasks that have not started (running ones finish).",
}


@router.get("/jobs/{job_id}/{action}")
def confirm_action(
    request: Request,
    job_id: str,
    action: str,
    operator: SignedIn,
    store: Store,
    settings: AppSettings,
) -> Response:
    if action not in ACTIONS:
        raise PageError(404, "No such page", "There is no such action on a job.")
    require(operator, Scope.ADMIN)
    page = load(store, settings, job_id[:64], letters=False)
    if page is None:
        raise PageError(404, "No such job", "There is no job with this id.")
    return render(
        request,
        "confirm.html",
        {
            "title": f"{action.capitalize()} job",
            "what": ACTIONS[action],
            "action": f"/console/jobs/{page.view.id}/{action}",
            "back": f"/console/jobs/{page.view.id}",
            "button": action.capitalize(),
            "job": page,
        },
        operator=operator,
    )


@router.post("/jobs/{job_id}/{action}")
async def run_action(
    request: Request,
    job_id: str,
    action: str,
    operator: SignedIn,
    store: Store,
    settings: AppSettings,
    registry: AppRegistry,
) -> Response:
    form = await read_form(request)
    check_csrf(operator, form)
    if action not in ACTIONS:
        raise PageError(404, "No such page", "There is no such action on a job.")
    require(operator, Scope.ADMIN)
    job_id = job_id[:64]
    try:
        if action == "retry":
            retry_job(
                store,
                registry,
                job_id,
                settings.default_queue,
                actor=operator.actor,
                timeout_seconds=settings.job_timeout_seconds,
            )
        else:
            cancel_job(store, job_id, actor=operator.actor)
    except RetryRefused as exc:
        raise PageError(409, f"Cannot {action}", str(exc)) from None
    return RedirectResponse(f"/console/jobs/{job_id}", status_code=303)


@router.get("/dead-letters")
def dead_letters(
    request: Request,
    operator: SignedIn,
    store: Store,
    replayed: Annotated[bool, Query()] = False,
) -> Response:
    """Dead letters newest first; replayed ones on request."""
    require(operator, Scope.ADMIN)
    with store.transaction(durable=False) as session:
        letters = queries.list_dead_letters(session, limit=200, include_replayed=replayed)
    return render(
        request,
        "dead_letters.html",
        {"letters": letters, "replayed": replayed},
        operator=operator,
    )


@router.get("/dead-letters/{letter_id}/replay")
def confirm_replay(request: Request, letter_id: int, operator: SignedIn, store: Store) -> Response:
    require(operator, Scope.ADMIN)
    with store.transaction(durable=False) as session:
        letter = queries.get_dead_letter(session, letter_id)
    if letter is None:
        raise PageError(404, "No such dead letter", "There is no dead letter with this id.")
    return render(
        request,
        "confirm.html",
        {
            "title": f"Replay dead letter {letter.id}",
            "what": f"Run the {letter.service} task of job {letter.job_id} again.",
            "action": f"/console/dead-letters/{letter.id}/replay",
            "back": "/console/dead-letters",
            "button": "Replay",
            "letter": letter,
        },
        operator=operator,
    )


@router.post("/dead-letters/{letter_id}/replay")
async def replay(
    request: Request,
    letter_id: int,
    operator: SignedIn,
    store: Store,
    settings: AppSettings,
    registry: AppRegistry,
) -> Response:
    form = await read_form(request)
    check_csrf(operator, form)
    require(operator, Scope.ADMIN)
    try:
        job_id, _service = replay_dead_letter(
            store,
            registry,
            letter_id,
            settings.default_queue,
            actor=operator.actor,
            timeout_seconds=settings.job_timeout_seconds,
        )
    except RetryRefused as exc:
        status = 404 if "no dead letter" in str(exc) else 409
        raise PageError(status, "Cannot replay", str(exc)) from None
    return RedirectResponse(f"/console/jobs/{job_id}", status_code=303)
