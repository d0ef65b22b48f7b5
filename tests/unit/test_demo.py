"""The README's first command: ``eraser demo`` erases one tenant from the 12-service
bakery estate through the real chord (embedded broker and worker thread)."""

from __future__ import annotations

import io
from pathlib import Path

from api.demo import run_demo


def test_the_demo_erases_one_tenant_through_the_chord(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_demo(out, workdir=tmp_path, subject=2, tenants=3, scale=0.3) is True
    text = out.getvalue()
    assert text.count("job succeeded") == 2  # the dry run and the erasure
    assert text.count("[12/12]") == 2
    assert "removed; the dry run counted the same" in text
    assert "no row of tenant 2 remains: True" in text
    assert "other tenants and shared rows (suppliers, weather): byte-identical" in text
    assert "Done: tenant erased, nothing else touched." in text
    assert max(len(line) for line in text.splitlines()) <= 80
