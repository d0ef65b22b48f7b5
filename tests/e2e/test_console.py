"""The operator console in a real browser: headless Chromium (the system's, driven by
Playwright) against a real ``eraser api`` and ``eraser worker`` (``apiserver.py``).

The tests sign in, preview and erase a subject, retry a failed job, replay a dead
letter, and check that a read-only key sees no action and is refused when it posts
anyway, that a post without the CSRF token is refused, and that no page names
another host or breaks its Content-Security-Policy. Outcomes are read from the target
databases and the job store. They save a 1280x800 screenshot of each page into
``docs/images/console/``.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
import sqlalchemy as sa

from api import certificates
from models.store.tables import AuditEvent, DeadLetter
from tests.e2e.apiserver import ApiServer, running_api

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path(os.environ.get("ERASER_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "images" / "console"
VIEWPORT = {"width": 1280, "height": 800}
#: Jobs per page of the console's list.
PAGE = 25

ERASED = "t-console-erase"
KEPT = ("t-console-keep-1", "t-console-keep-2")
ACCOUNTS = ("acct-console",)
TENANT_TABLES = {"customers": 3, "invoices": 6, "projects": 2, "notes": 4}

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.mysql]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with running_api(tmp_path_factory.mktemp("console"), [ERASED, *KEPT], ACCOUNTS) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Console:
    """One signed-in browser context: its page, every URL it requested, and every
    Content-Security-Policy violation the browser reported."""

    def __init__(self, server: ApiServer, browser: Any, key: str) -> None:
        self.server = server
        self.context = browser.new_context(viewport=VIEWPORT, base_url=server.url)
        self.requested: list[str] = []
        self.violations: list[str] = []
        self.page = self.context.new_page()
        self.page.on("request", lambda request: self.requested.append(request.url))
        self.page.on("console", self._console)
        self.page.goto("/console/")
        assert "/console/sign-in" in self.page.url
        self.page.get_by_label("API key").fill(server.secrets[key])
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(re.compile(r"/console/jobs$"))

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text:
            self.violations.append(message.text)

    def goto(self, path: str) -> Any:
        return self.page.goto(path)

    def shot(self, name: str, *, full_page: bool = False) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)

    def csrf(self) -> str:
        return str(self.page.locator("input[name=csrf]").first.get_attribute("value"))

    def post(self, path: str, form: dict[str, str]) -> Any:
        """A form post with this session's cookie, bypassing the page's buttons."""
        return self.context.request.post(path, form=form, max_redirects=0)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def console(server: ApiServer, browser: Any) -> Iterator[Any]:
    opened: list[Console] = []

    def open_as(key: str) -> Console:
        session = Console(server, browser, key)
        opened.append(session)
        return session

    yield open_as
    for session in opened:
        assert session.violations == [], session.violations
        session.close()


def events(server: ApiServer, job_id: str, kind: str) -> list[str]:
    """The actors of the job's audit events of ``kind``."""
    with server.store.transaction() as session:
        return list(
            session.scalars(
                sa.select(AuditEvent.actor).where(
                    AuditEvent.job_id == job_id, AuditEvent.kind == kind
                )
            )
        )


def failed_job(server: ApiServer) -> str:
    """A job whose only task (the ``broken`` service's) failed for good."""
    with server.client("all") as http:
        answer = http.post(
            "/v1/jobs",
            json={
                "subject_kind": "legacy",
                "subject_value": KEPT[0],
                "services": ["broken"],
                "dry_run": True,
            },
        )
    assert answer.status_code == 202, answer.text
    job_id = str(answer.json()["id"])
    assert server.wait(job_id)["status"] == "failed"
    return job_id


def open_letters(server: ApiServer, job_id: str) -> list[int]:
    with server.store.transaction() as session:
        return list(
            session.scalars(
                sa.select(DeadLetter.id).where(
                    DeadLetter.job_id == job_id, DeadLetter.replayed_at.is_(None)
                )
            )
        )


def job_id_of(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


# --- sign in, preview, erase ------------------------------------------------------------------


def test_sign_in_preview_erase_and_see_the_job_succeed(server: ApiServer, console: Any) -> None:
    before = server.targets.snapshot()
    owned = server.targets.rows_of("tenant_key", ERASED)
    assert sum(map(len, owned.values())) == sum(TENANT_TABLES.values())
    ui = console("all")
    ui.page.get_by_role("link", name="Erase a subject").click()
    ui.page.get_by_label("Subject kind").select_option("tenant")
    ui.page.get_by_label("Value").fill(ERASED)
    ui.shot("erase")
    started = time.monotonic()
    ui.page.get_by_role("button", name="Preview").click()
    ui.page.wait_for_url(re.compile(r"/console/erase/[0-9a-f-]{36}$"))
    preview_id = job_id_of(ui.page.url)
    playwright_api.expect(ui.page.locator("#preview-status")).to_have_text(
        "succeeded", timeout=60_000
    )
    # The plan's tree gets the dry run's counts with the refresh that finds it done.
    playwright_api.expect(ui.page.locator("#plans")).to_have_attribute("data-counted", "yes")
    print(f"preview (dry run done, plan shown) {time.monotonic() - started:.2f}s after Preview")
    counts = ui.page.locator("table.counts tbody tr")
    shown = {
        row.locator("td").nth(1).inner_text().rsplit(".", 1)[-1]: int(
            row.locator("td").nth(3).inner_text()
        )
        for row in counts.all()
    }
    assert shown == TENANT_TABLES
    assert ui.page.locator("#preview-total").inner_text() == str(sum(TENANT_TABLES.values()))
    _the_plan_is_a_tree_with_the_counts(ui)
    # The value is on this page, to the key that typed it, while the job store holds it
    # (a finished dry run's value is purged: then the page names the keyed hash).
    if ui.page.locator(".value").count():
        assert ERASED in ui.page.locator(".value").inner_text()
    else:
        assert "no longer kept" in ui.page.content()
    ui.shot("preview", full_page=True)

    # A wrong confirmation erases nothing.
    ui.page.get_by_label(re.compile("Type the value again")).fill(ERASED + "x")
    ui.page.get_by_role("button", name="Erase").click()
    playwright_api.expect(ui.page.locator("h1")).to_have_text("The value does not match")
    assert server.targets.snapshot() == before

    ui.goto(f"/console/erase/{preview_id}")
    ui.page.get_by_label(re.compile("Type the value again")).fill(ERASED)
    ui.page.get_by_role("button", name="Erase").click()
    ui.page.wait_for_url(re.compile(r"/console/jobs/[0-9a-f-]{36}$"))
    job_id = job_id_of(ui.page.url)
    assert job_id != preview_id
    playwright_api.expect(ui.page.locator("#job-status")).to_have_text("succeeded", timeout=60_000)
    # Elsewhere: the job id and the keyed hash, never the value.
    assert ERASED not in ui.page.content()
    assert ui.page.locator("code.hash").inner_text()
    ui.page.get_by_role("link", name="Download the erasure certificate").wait_for()
    # The job ended while the page was open: no Cancel button is left behind.
    assert ui.page.get_by_role("link", name="Cancel").count() == 0
    ui.shot("job", full_page=True)
    _the_certificate_downloads_and_verifies(server, ui, job_id, owned)
    assert all(not rows for rows in server.targets.rows_of("tenant_key", ERASED).values())
    gone = {t: set(rows) for t, rows in owned.items()}
    kept = {t: [r for r in rows if r not in gone.get(t, set())] for t, rows in before.items()}
    assert server.targets.snapshot() == kept
    # The audit events name the key, as the API's do.
    for submitted in (preview_id, job_id):
        assert events(server, submitted, "job.submitted") == [server.key_ids["all"]]
    # Reloading the confirmation finds the job of the first click.
    answer = ui.post(f"/console/erase/{preview_id}/confirm", {"csrf": ui.csrf(), "confirm": ERASED})
    assert answer.status == 303
    assert answer.headers["location"] == f"/console/jobs/{job_id}"


def _the_plan_is_a_tree_with_the_counts(ui: Any) -> None:
    """The plan per service as a tree: invoices under the customers they reference,
    each node with the dry run's count; the order of erasure children first."""
    billing = ui.page.locator("section.plan[data-service=billing]")
    customers = billing.locator("li[data-table='public.customers']")
    invoices = customers.locator("li[data-table='public.invoices']")
    assert customers.locator(".rows").first.get_attribute("data-rows") == "3"
    assert invoices.locator(".rows").get_attribute("data-rows") == "6"
    assert invoices.locator(".tag").inner_text() == "delete"
    steps = billing.locator(".order li code").all_text_contents()
    assert steps.index("public.invoices") < steps.index("public.customers")
    crm = ui.page.locator("section.plan[data-service=crm]")
    assert crm.locator("li[data-table$='.projects'] li[data-table$='.notes']").count() == 1
    assert "None: no table of these plans is shared" in ui.page.locator("#shared").inner_text()


def _the_certificate_downloads_and_verifies(
    server: ApiServer, ui: Any, job_id: str, owned: dict[str, list[Any]]
) -> None:
    """The certificate downloads with the session (no Bearer key) and verifies with the
    public keys the server publishes, naming the rows that went."""
    download = ui.context.request.get(f"/console/jobs/{job_id}/certificate")
    assert download.status == 200
    assert download.headers["content-type"] == "application/jose"
    token = download.text().strip()
    seen = certificates.verify(token, f"{server.url}/.well-known/jwks.json")
    assert seen.claims["job_id"] == job_id
    assert seen.claims["total_rows"] == sum(len(rows) for rows in owned.values())
    # The job page says so: verified against the published keys, naming the key.
    status = ui.page.locator("#certificate-status")
    assert status.inner_text() == (
        f"Verified with key {seen.header['kid']} against the public keys this server publishes"
    )
    # A certificate the operator pastes: an altered one is refused, saying why.
    head, payload, signature = token.split(".")
    altered = f"{head}.{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{signature}"
    field = ui.page.get_by_label(re.compile("Check a certificate you hold"))
    field.fill(altered)
    ui.page.get_by_role("button", name="Check the certificate").click()
    playwright_api.expect(ui.page.locator("#pasted-status")).to_contain_text(
        "is not verified: bad signature"
    )
    ui.page.get_by_label(re.compile("Check a certificate you hold")).fill(token)
    ui.page.get_by_role("button", name="Check the certificate").click()
    playwright_api.expect(ui.page.locator("#pasted-status")).to_have_text(
        f"The certificate you pasted is verified with key {seen.header['kid']} and matches "
        "the job record."
    )


def test_an_admin_only_kind_needs_the_admin_scope_to_erase(server: ApiServer, console: Any) -> None:
    ui = console("submit_read")
    ui.goto("/console/erase")
    ui.page.get_by_label("Subject kind").select_option("account")
    ui.page.get_by_label("Value").fill(ACCOUNTS[0])
    ui.page.get_by_role("button", name="Preview").click()
    ui.page.wait_for_url(re.compile(r"/console/erase/[0-9a-f-]{36}$"))
    preview_id = job_id_of(ui.page.url)
    playwright_api.expect(ui.page.locator("#preview-status")).to_have_text(
        "succeeded", timeout=60_000
    )
    playwright_api.expect(ui.page.get_by_role("alert")).to_contain_text("jobs:admin")
    assert ui.page.get_by_role("button", name="Erase").count() == 0
    answer = ui.post(
        f"/console/erase/{preview_id}/confirm", {"csrf": ui.csrf(), "confirm": ACCOUNTS[0]}
    )
    assert answer.status == 403
    assert server.targets.rows_of("account_key", ACCOUNTS[0])["billing:logins"]


# --- retry, dead letters ----------------------------------------------------------------------


def test_retry_a_failed_job_and_replay_a_dead_letter(server: ApiServer, console: Any) -> None:
    job_id = failed_job(server)
    first = open_letters(server, job_id)
    assert len(first) == 1
    ui = console("admin_read")
    actor = f"key:{server.key_ids['admin_read']}"

    ui.goto(f"/console/jobs/{job_id}")
    ui.page.get_by_role("link", name="Retry failed tasks").click()
    ui.shot("confirm-retry")
    ui.page.get_by_role("button", name="Retry").click()
    ui.page.wait_for_url(re.compile(rf"/console/jobs/{job_id}$"))
    assert events(server, job_id, "job.retried") == [actor]
    with server.store.transaction() as session:
        replayed = session.get(DeadLetter, first[0])
        assert replayed is not None
        assert replayed.replayed_by == actor
    # The broken service still refuses connections: the task fails again.
    assert server.wait(job_id)["status"] == "failed"
    second = open_letters(server, job_id)
    assert len(second) == 1
    assert second != first

    ui.page.get_by_role("link", name="Dead letters").click()
    row = ui.page.locator("tr", has=ui.page.locator(f"a[href='/console/jobs/{job_id}']"))
    playwright_api.expect(row.get_by_role("link", name="Replay")).to_be_visible()
    ui.shot("dead-letters")
    row.get_by_role("link", name="Replay").click()
    ui.shot("confirm-replay")
    ui.page.get_by_role("button", name="Replay").click()
    ui.page.wait_for_url(re.compile(rf"/console/jobs/{job_id}$"))
    with server.store.transaction() as session:
        letter = session.get(DeadLetter, second[0])
        assert letter is not None
        assert letter.replayed_by == actor
    assert events(server, job_id, "job.retried") == [actor, actor]
    server.wait(job_id)
    # Replaying it again is refused with a page that says so.
    answer = ui.post(f"/console/dead-letters/{second[0]}/replay", {"csrf": ui.csrf()})
    assert answer.status == 409
    assert "was replayed" in answer.text()


def test_cancel_a_waiting_job_and_filter_the_list(server: ApiServer, console: Any) -> None:
    # The archive service's queue has no consumer: its task waits until cancelled.
    with server.client("all") as http:
        answer = http.post(
            "/v1/jobs",
            json={"subject_kind": "legacy", "subject_value": KEPT[1], "services": ["archive"]},
        )
    assert answer.status_code == 202, answer.text
    job_id = str(answer.json()["id"])
    ui = console("all")
    ui.goto("/console/jobs")
    ui.page.get_by_label("Service").select_option("archive")
    ui.page.get_by_role("button", name="Filter").click()
    ui.page.wait_for_url(re.compile(r"service=archive"))
    listed = ui.page.locator("#job-rows a").all_inner_texts()
    assert job_id in listed
    assert all(
        "archive" in row
        for row in ui.page.locator("#job-rows tr td:nth-child(4)").all_inner_texts()
    )
    ui.page.get_by_role("link", name=job_id).click()
    ui.page.get_by_role("link", name="Cancel").click()
    ui.page.get_by_role("button", name="Cancel").click()
    ui.page.wait_for_url(re.compile(rf"/console/jobs/{job_id}$"))
    playwright_api.expect(ui.page.locator("#job-status")).to_have_text("cancelled", timeout=30_000)
    assert events(server, job_id, "job.cancelled") == [f"key:{server.key_ids['all']}"]


def test_the_service_filter_pages_through_every_job_of_the_service(
    server: ApiServer, console: Any
) -> None:
    """More archive jobs than a page holds, among jobs of other services: the first
    page is full, *Next page* brings the rest, none twice, none of another service."""
    made = set()
    with server.client("all") as http:
        for n in range(PAGE + 1):
            answer = http.post(
                "/v1/jobs",
                json={
                    "subject_kind": "legacy",
                    "subject_value": f"{KEPT[1]}-{n}",
                    "services": ["archive"],
                    "dry_run": True,
                },
            )
            assert answer.status_code == 202, answer.text
            made.add(str(answer.json()["id"]))
    failed_job(server)  # a newer job of another service, first in the unfiltered list
    ui = console("reader")
    ui.goto("/console/jobs?service=archive")
    first = ui.page.locator("#job-rows a").all_inner_texts()
    assert len(first) == PAGE
    ui.page.get_by_role("link", name="Next page").click()
    ui.page.wait_for_url(re.compile(r"cursor="))
    assert "service=archive" in ui.page.url
    rest = ui.page.locator("#job-rows a").all_inner_texts()
    assert rest
    assert not set(first) & set(rest)
    assert made <= set(first) | set(rest)
    services = ui.page.locator("#job-rows tr td:nth-child(4)").all_inner_texts()
    assert all(row.strip() == "archive" for row in services), services


# --- scopes and CSRF --------------------------------------------------------------------------


def test_a_read_only_key_sees_no_action_and_is_refused_when_it_posts(
    server: ApiServer, console: Any
) -> None:
    job_id = failed_job(server)
    letter = open_letters(server, job_id)[0]
    ui = console("reader")
    ui.goto(f"/console/jobs/{job_id}")
    playwright_api.expect(ui.page.locator("#job-status")).to_have_text("failed")
    ui.shot("job-read-only")
    forms = ui.page.locator("main form")
    assert forms.count() == 0
    assert ui.page.locator("main .button, main button").count() == 0
    assert ui.page.get_by_role("link", name="Erase a subject").count() == 0
    assert ui.page.get_by_role("link", name="Dead letters").count() == 0
    for path in ("/console/erase", f"/console/jobs/{job_id}/retry", "/console/dead-letters"):
        assert ui.goto(path).status == 403, path
    csrf = ui.csrf()
    for path, form in (
        (f"/console/jobs/{job_id}/retry", {}),
        (f"/console/jobs/{job_id}/cancel", {}),
        (f"/console/dead-letters/{letter}/replay", {}),
        ("/console/erase", {"kind": "tenant", "value": KEPT[1]}),
    ):
        answer = ui.post(path, {"csrf": csrf, **form})
        assert answer.status == 403, path
    assert events(server, job_id, "job.retried") == []
    assert open_letters(server, job_id) == [letter]


def test_a_form_post_without_the_csrf_token_is_refused(server: ApiServer, console: Any) -> None:
    job_id = failed_job(server)
    ui = console("all")
    ui.goto(f"/console/jobs/{job_id}")
    for form in ({"services": "broken"}, {"csrf": "forged-token"}):
        answer = ui.post(f"/console/jobs/{job_id}/retry", form)
        assert answer.status == 403
        assert "security token" in answer.text()
    answer = ui.post("/console/erase", {"kind": "tenant", "value": KEPT[1]})
    assert answer.status == 403
    assert events(server, job_id, "job.retried") == []
    # Signing out needs the token too; with it, the session ends.
    assert ui.post("/console/sign-out", {}).status == 403
    ui.page.get_by_role("button", name="Sign out").click()
    ui.page.wait_for_url(re.compile("/console/sign-in"))
    assert "/console/sign-in" in ui.goto("/console/jobs").url


# --- what every page names --------------------------------------------------------------------

LINKS = """() => Array.from(document.querySelectorAll('[src],[href],[action]'))
  .map(e => e.getAttribute('src') || e.getAttribute('href') || e.getAttribute('action'))"""


def test_no_page_names_another_host(server: ApiServer, browser: Any, console: Any) -> None:
    job_id = failed_job(server)
    letter = open_letters(server, job_id)[0]
    ui = console("all")
    pages = [
        "/console/jobs",
        "/console/jobs?status=failed&kind=legacy&service=broken",
        f"/console/jobs/{job_id}",
        f"/console/jobs/{job_id}/retry",
        f"/console/jobs/{job_id}/cancel",
        "/console/erase",
        "/console/dead-letters?replayed=true",
        f"/console/dead-letters/{letter}/replay",
        "/console/services",
        "/console/services?plans=true",
        "/console/no-such-page",
        "/docs",
    ]
    own = urlsplit(server.url).netloc
    for path in pages:
        response = ui.goto(path)
        if path.startswith("/console/"):
            assert "default-src 'self'" in response.headers["content-security-policy"]
            assert "unsafe-inline" not in response.headers["content-security-policy"]
        ui.page.wait_for_load_state("networkidle")
        for ref in ui.page.evaluate(LINKS):
            target = urlsplit(urljoin(ui.page.url, ref))
            assert target.scheme in {"http", ""}, (path, ref)
            assert target.netloc == own, (path, ref)
        assert "Traceback" not in ui.page.content()
        if path == "/console/jobs":
            ui.shot("jobs")
        if path == "/console/services?plans=true":
            ui.shot("services")
            # The broken service's plan error names no DSN (nor its password).
            assert "broken-Pa55word" not in ui.page.content()
    ui.goto("/console/no-such-page")
    ui.shot("not-found")
    assert ui.page.locator("h1").inner_text() == "No such page"
    assert {urlsplit(url).netloc for url in ui.requested} == {own}
    signed_out = browser.new_context(viewport=VIEWPORT, base_url=server.url)
    try:
        page = signed_out.new_page()
        page.goto("/console/sign-in")
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "sign-in.png"))
        page.set_viewport_size(PHONE)
        assert page.evaluate(OVERFLOW) <= 0
        assert page.evaluate(UNLABELLED) == []
        page.screenshot(path=str(SHOTS / "phone-sign-in.png"))
        for ref in page.evaluate(LINKS):
            assert urlsplit(urljoin(page.url, ref)).netloc == own, ref
    finally:
        signed_out.close()


PHONE = {"width": 390, "height": 844}
#: How far the page is wider than the window (0: no sideways scrolling).
OVERFLOW = "() => document.documentElement.scrollWidth - window.innerWidth"
#: Every visible form field without a label, and every button without a name.
UNLABELLED = """() => Array.from(document.querySelectorAll('input, select, textarea, button'))
  .filter(e => e.type !== 'hidden')
  .filter(e => e.tagName === 'BUTTON' ? !e.textContent.trim()
    : !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
  .map(e => e.outerHTML)"""


def _a_preview(ui: Any, value: str) -> str:
    """Submit a dry run through the erase form; the preview's path once it is done."""
    ui.goto("/console/erase")
    ui.page.get_by_label("Subject kind").select_option("tenant")
    ui.page.get_by_label("Value").fill(value)
    ui.page.get_by_role("button", name="Preview").click()
    ui.page.wait_for_url(re.compile(r"/console/erase/[0-9a-f-]{36}$"))
    playwright_api.expect(ui.page.locator("#plans")).to_have_attribute(
        "data-counted", "yes", timeout=60_000
    )
    return str(urlsplit(ui.page.url).path)


def test_every_page_fits_a_phone_and_labels_its_fields(server: ApiServer, console: Any) -> None:
    """At 390x844 no page is wider than the window (tables scroll on their own); every
    field has a label and every button a name. Screenshots at both sizes."""
    job_id = failed_job(server)
    letter = open_letters(server, job_id)[0]
    ui = console("all")
    preview = _a_preview(ui, KEPT[0])
    pages = {
        "jobs": "/console/jobs",
        "job": f"/console/jobs/{job_id}",
        "erase": "/console/erase",
        "preview": preview,
        "confirm-retry": f"/console/jobs/{job_id}/retry",
        "dead-letters": "/console/dead-letters",
        "confirm-replay": f"/console/dead-letters/{letter}/replay",
        "services": "/console/services?plans=true",
    }
    for name, path in pages.items():
        ui.goto(path)
        ui.page.wait_for_load_state("networkidle")
        assert ui.page.evaluate(UNLABELLED) == [], path
        ui.page.set_viewport_size(PHONE)
        assert ui.page.evaluate(OVERFLOW) <= 0, path
        ui.shot(f"phone-{name}", full_page=name == "preview")
        ui.page.set_viewport_size(VIEWPORT)
    # The top bar on a phone: the navigation in view, not pushed below the fold.
    ui.page.set_viewport_size(PHONE)
    ui.goto("/console/jobs")
    header = ui.page.locator("header.top").bounding_box()
    assert header is not None
    assert header["height"] < PHONE["height"] / 4, header
    assert ui.page.get_by_role("link", name="Dead letters").is_visible()


def _tab_to(page: Any, text: str, limit: int = 40) -> None:
    """Press Tab until the focused element's text (or label) is ``text``."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "() => { const e = document.activeElement;"
            " return (e.labels && e.labels[0] ? e.labels[0].textContent : e.textContent)"
            ".trim(); }"
        )
        if focused == text:
            return
    raise AssertionError(f"Tab never reached {text!r}")


def test_sign_in_and_preview_with_the_keyboard_only(server: ApiServer, browser: Any) -> None:
    """Tab and Enter (and typing) only: sign in, open *Erase a subject*, choose the
    kind, type the value, preview, fold a subtree of the plan; the skip link is the
    first stop of a page."""
    context = browser.new_context(viewport=VIEWPORT, base_url=server.url)
    try:
        page = context.new_page()
        page.goto("/console/jobs")
        page.wait_for_url(re.compile("/console/sign-in"))
        # The key's field has the focus when the page opens.
        assert page.evaluate("() => document.activeElement.id") == "key"
        page.keyboard.type(server.secrets["all"])
        page.keyboard.press("Enter")
        page.wait_for_url(lambda url: urlsplit(url).path == "/console/jobs")
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement.textContent") == "Skip to content"
        _tab_to(page, "Erase a subject")
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"/console/erase$"))
        _tab_to(page, "Subject kind")
        page.keyboard.type("tenant")  # a focused select takes the option typed
        _tab_to(page, "Value")
        page.keyboard.type(KEPT[1])
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"/console/erase/[0-9a-f-]{36}$"))
        playwright_api.expect(page.locator("#preview-status")).to_have_text(
            "succeeded", timeout=60_000
        )
        assert page.locator("h1").inner_text() == "Preview: erase a tenant"
        # The plan's subtrees fold and unfold from the keyboard.
        summary = page.locator("section.plan[data-service=billing] summary").first
        summary.focus()
        page.keyboard.press("Enter")
        assert summary.locator("xpath=..").get_attribute("open") is None
        page.keyboard.press("Enter")
        assert summary.locator("xpath=..").get_attribute("open") == ""
    finally:
        context.close()


# --- the session ------------------------------------------------------------------------------


def test_a_forged_or_foreign_session_is_sent_to_sign_in(server: ApiServer, browser: Any) -> None:
    context = browser.new_context(viewport=VIEWPORT, base_url=server.url)
    try:
        page = context.new_page()
        page.goto("/console/sign-in?next=//elsewhere.example/x")
        page.get_by_label("API key").fill(server.secrets["reader"])
        page.get_by_role("button", name="Sign in").click()
        # ``next`` leads only to a console page: never another host.
        page.wait_for_url(re.compile(r"/console/jobs$"))
        cookie = next(c for c in context.cookies() if c["name"] == "eraser_console")
        assert cookie["httpOnly"]
        assert cookie["sameSite"] == "Strict"
        assert cookie["path"] == "/console"
        assert 0 < cookie["expires"] - time.time() <= 8 * 3600 + 60
        # The cookie names the key's id, never its secret.
        assert server.secrets["reader"] not in cookie["value"]
        head, _, signature = cookie["value"].rpartition(".")
        forged = f"{head}.{'A' * len(signature)}"
        context.add_cookies([{**cookie, "value": forged}])
        page.goto("/console/jobs")
        assert "/console/sign-in" in page.url
        # A post from another site is refused, the sign-in form's too.
        answer = context.request.post(
            "/console/sign-in",
            form={"key": server.secrets["all"]},
            headers={"Origin": "http://elsewhere.example"},
            max_redirects=0,
        )
        assert answer.status == 403
    finally:
        context.close()


def in_thread(call: Coroutine[Any, Any, httpx.Response]) -> httpx.Response:
    """Run ``call`` on an event loop of its own (Playwright's runs in this thread)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, call).result()


def test_the_session_cookie_is_secure_over_https(tmp_path: Path) -> None:
    """In process (no browser): the cookie's flags for HTTPS and plain HTTP."""
    from tests.unit.sqlite_api import sqlite_api  # noqa: PLC0415 - only this test

    async def sign_in(app: Any, base: str, key: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base) as http:
            return await http.post("/console/sign-in", data={"key": key})

    for api in sqlite_api(tmp_path):
        for base, secure in (("https://eraser.test", True), ("http://eraser.test", False)):
            answer = in_thread(sign_in(api.app, base, api.secrets["all"]))
            assert answer.status_code == 303
            cookie = answer.headers["set-cookie"].lower()
            assert ("; secure" in cookie) is secure, cookie
            assert "httponly" in cookie
            assert "samesite=strict" in cookie
            wrong = in_thread(sign_in(api.app, base, api.secrets["all"] + "x"))
            assert wrong.status_code == 401
            assert "set-cookie" not in wrong.headers
