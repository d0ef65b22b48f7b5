"""The schema fingerprint: a stable hash of the facts a plan depends on."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from worker.catalog.model import TableInfo


def fingerprint(tables: Iterable[TableInfo]) -> str:
    """A stable hash of the schema facts a plan depends on."""
    doc = []
    for t in sorted(tables, key=lambda t: t.name):
        doc.append(
            {
                "table": str(t.name),
                "columns": [[c.name, str(c.type), c.nullable] for c in t.columns.values()],
                "pk": list(t.primary_key),
                "unique": sorted(list(u) for u in t.unique_keys),
                "indexes": sorted([list(i.columns), i.unique] for i in t.indexes),
                "fks": sorted(
                    [
                        list(fk.child_columns),
                        str(fk.parent),
                        list(fk.parent_columns),
                        fk.on_delete,
                        fk.deferrable,
                        fk.initially_deferred,
                        fk.validated,
                    ]
                    for fk in t.foreign_keys
                ),
                "triggers": sorted([tr.name, tr.timing, list(tr.events)] for tr in t.triggers),
                "partitioned": t.partitioned,
                # Only when set: the fingerprints of other schemas stay what they were.
                **({"system_versioned": True} if t.system_versioned else {}),
                **({"inherited": True} if t.inherited else {}),
            }
        )
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(raw).hexdigest()
