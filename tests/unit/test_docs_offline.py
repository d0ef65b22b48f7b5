"""``/docs`` works offline: Swagger UI's assets are served by the app itself, the page
names no other host, and ``/`` leads there."""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.unit.sqlite_api import SqliteApi, sqlite_api


@pytest.fixture
def api(tmp_path: Path) -> Iterator[SqliteApi]:
    yield from sqlite_api(tmp_path)


class Links(HTMLParser):
    """Every ``src`` and ``href`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [v for k, v in attrs if k in ("src", "href") and v is not None]


def test_the_docs_page_names_no_other_host_and_its_assets_answer(api: SqliteApi) -> None:
    page = api.call("GET", "/docs", None)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    links = Links()
    links.feed(page.text)
    assert len(links.found) >= 3  # the script, the stylesheet, the icon
    for link in links.found:
        parts = urlsplit(link)
        assert parts.netloc in ("", "eraser"), link
        assert parts.scheme in ("", "http"), link
        asset = api.call("GET", parts.path, None)
        assert asset.status_code == 200, link
        assert asset.content
    # Nothing in the page's own script reaches out either (the spec comes from here,
    # the online validator is off).
    assert "https://" not in page.text
    assert "'/openapi.json'" in page.text
    assert '"validatorUrl": null' in page.text


def test_the_vendored_assets_carry_their_licence(api: SqliteApi) -> None:
    licence = api.call("GET", "/static/swagger/LICENSE", None)
    assert licence.status_code == 200
    assert "Apache License" in licence.text


def test_the_front_page_leads_to_the_docs(api: SqliteApi) -> None:
    answer = api.call("GET", "/", None)
    assert answer.status_code in (302, 307)
    assert answer.headers["location"] == "/docs"
