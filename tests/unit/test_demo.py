"""The README's first command: the demo runs the engine end to end on SQLite."""

from __future__ import annotations

import io
from pathlib import Path

from api.demo import run_demo


def test_demo_erases_one_tenant_and_leaves_the_others(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_demo(out, workdir=tmp_path) is True
    text = out.getvalue()
    assert "verified: no row of the subject remains" in text
    assert "The erasure matches the dry run." in text
    assert "tenant 2: untouched" in text
    assert "tenant 3: untouched" in text
    assert max(len(line) for line in text.splitlines()) <= 80
