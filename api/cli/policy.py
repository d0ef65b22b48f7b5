"""``--policy TABLE=ACTION``: a table policy written on the command line."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from models.erasure import ScalarValue, TablePolicy


def parse_policy(text: str) -> tuple[str, TablePolicy]:
    """``TABLE=keep``, ``TABLE=anonymize:col=null,col2=erased`` or ``TABLE=reassign:0``
    -> (table, policy).

    Raises ``EraserError`` naming the option when the text is not a policy."""
    from models.erasure import TableAction, TablePolicy  # noqa: PLC0415 - start-up time
    from worker.exceptions import EraserError  # noqa: PLC0415

    table, sep, spec = text.partition("=")
    if not sep or not table:
        raise EraserError(f"--policy {text!r}: expected TABLE=ACTION")
    action_text, _, assignments = spec.partition(":")
    try:
        action = TableAction(action_text.strip())
    except ValueError:
        choices = ", ".join(a.value for a in TableAction if a is not TableAction.NULLIFY)
        raise EraserError(f"--policy {text!r}: unknown action (one of {choices})") from None
    if action is TableAction.REASSIGN:
        # ``TABLE=reassign:KEY``: the placeholder row's key.
        if not assignments.strip():
            raise EraserError(f"--policy {text!r}: expected TABLE=reassign:PLACEHOLDER_KEY")
        return table.strip(), TablePolicy(action=action, reassign_to=_scalar(assignments.strip()))
    values: dict[str, ScalarValue] = {}
    for item in filter(None, (a.strip() for a in assignments.split(","))):
        col, eq, raw = item.partition("=")
        if not eq:
            raise EraserError(f"--policy {text!r}: expected COL=VALUE in {item!r}")
        values[col.strip()] = _scalar(raw.strip())
    return table.strip(), TablePolicy(action=action, set=values)


def _scalar(raw: str) -> ScalarValue:
    if raw.lower() == "null":
        return None
    try:
        parsed = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(parsed, str | int | float | bool):
        return parsed
    return raw
