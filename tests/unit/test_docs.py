"""The documentation site builds with ``mkdocs build --strict`` (a broken link, a missing
anchor or a page left out of the nav fails it), every page in ``docs/`` is in the nav,
and the README's links into ``docs/`` name files that exist.

The build runs in a subprocess into a temporary directory; it reads only the
repository and needs no network."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

#: A Markdown link's target: ``[text](target)``, without a title.
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


class _ConfigLoader(yaml.SafeLoader):
    """Reads mkdocs.yml, whose ``!!python/name:`` tags name Python objects: kept as
    their text, never imported."""


def _python_name(_loader: yaml.SafeLoader, suffix: str, _node: yaml.Node) -> str:
    return suffix


_ConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/name:", _python_name)


def _nav_pages(entry: Any) -> list[str]:
    """Every page a nav entry names, at any depth."""
    if isinstance(entry, str):
        return [entry]
    if isinstance(entry, list):
        return [page for item in entry for page in _nav_pages(item)]
    if isinstance(entry, dict):
        return [page for value in entry.values() for page in _nav_pages(value)]
    return []


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="mkdocs is in the dev extra")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "index.html").is_file()
    assert (tmp_path / "engine" / "index.html").is_file()


def test_every_page_is_in_the_nav() -> None:
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    config = yaml.load(text, Loader=_ConfigLoader)  # noqa: S506  SafeLoader: no objects built
    in_nav = _nav_pages(config["nav"])
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(in_nav) == pages
    assert len(in_nav) == len(set(in_nav)), "a page is listed twice"


def _anchors(page: Path) -> set[str]:
    """The ids MkDocs gives the page's headings (the ``toc`` extension's slugs)."""
    toc = pytest.importorskip("markdown.extensions.toc")
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.M)
    return {toc.slugify(h.replace("`", ""), "-") for h in headings}


def test_the_readme_links_into_docs_resolve() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [t for t in _LINK.findall(readme) if t.startswith("docs/")]
    assert targets, "the README links into docs/"
    broken = []
    for target in targets:
        path, _, anchor = target.partition("#")
        page = ROOT / path
        if not page.is_file() or (anchor and anchor not in _anchors(page)):
            broken.append(target)
    assert broken == []
