"""The registry's word on tables: policies resolved against the catalog, anonymize
policies checked, and virtual foreign keys made real for the plan."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from models.erasure import TableAction, TablePolicy
from worker.catalog.model import (
    SET_DEFAULT,
    SET_NULL,
    Catalog,
    ForeignKey,
    TableInfo,
    TableName,
)
from worker.exceptions import PolicyConflict, UnknownTable
from worker.planning.model import REMOVING


def virtual_fk(catalog: Catalog, child: Sequence[str], parent: Sequence[str]) -> ForeignKey:
    """A reference the database does not declare, from the registry's column lists."""

    def split(refs: Sequence[str]) -> tuple[TableName, tuple[str, ...]]:
        tables = {ref.rsplit(".", 1)[0] for ref in refs}
        if len(tables) != 1:
            raise UnknownTable(", ".join(refs), "a virtual foreign key (one table per side)")
        (name,) = tables
        try:
            table = catalog.resolve(name)
        except KeyError:
            raise UnknownTable(name, "a virtual foreign key") from None
        cols = tuple(ref.rsplit(".", 1)[1] for ref in refs)
        missing = [c for c in cols if c not in catalog.tables[table].columns]
        if missing:
            raise UnknownTable(f"{table}.{missing[0]}", "a virtual foreign key (column)")
        return table, cols

    child_table, child_cols = split(child)
    parent_table, parent_cols = split(parent)
    info = catalog.tables[child_table]
    return ForeignKey(
        name=f"virtual:{child_table}({','.join(child_cols)})",
        child=child_table,
        child_columns=child_cols,
        parent=parent_table,
        parent_columns=parent_cols,
        clearable=tuple(c for c in child_cols if info.columns[c].nullable),
    )


def resolve_policies(
    catalog: Catalog, policies: Mapping[str, TablePolicy]
) -> dict[TableName, TablePolicy]:
    """The registry's policies by table, each checked against the table's columns."""
    resolved: dict[TableName, TablePolicy] = {}
    for name, pol in policies.items():
        try:
            table = catalog.resolve(name)
        except KeyError:
            raise UnknownTable(name, "a table policy") from None
        _check_policy(catalog.tables[table], str(table), pol)
        resolved[table] = pol
    return resolved


def _check_policy(info: TableInfo, name: str, pol: TablePolicy) -> None:
    if pol.action is TableAction.ANONYMIZE:
        if not pol.set:
            raise PolicyConflict(name, "anonymize needs at least one column in 'set'")
        for col in pol.set:
            if col not in info.columns:
                raise PolicyConflict(name, f"anonymize sets unknown column {col!r}")
            if pol.set[col] is None and not info.columns[col].nullable:
                raise PolicyConflict(name, f"column {col!r} is NOT NULL")
    elif pol.set:
        raise PolicyConflict(name, "'set' is only valid with action 'anonymize'")
    if pol.action is TableAction.NULLIFY:
        raise PolicyConflict(name, "'nullify' is not a policy")
    if (pol.action is TableAction.REASSIGN) != (pol.reassign_to is not None):
        raise PolicyConflict(name, "'reassign' goes with 'reassign_to', and only it")


def check_anonymize(
    catalog: Catalog,
    actions: Mapping[TableName, TableAction],
    policies: Mapping[TableName, TablePolicy],
) -> None:
    """Refuse an anonymize policy that would leave references to deleted rows, or
    rewrite a key that other rows reference."""
    for table, action in actions.items():
        if action is not TableAction.ANONYMIZE:
            continue
        pol = policies[table]
        for fk in catalog.tables[table].foreign_keys:
            parent_action = actions.get(fk.parent)
            if parent_action not in REMOVING or fk.on_delete in (SET_NULL, SET_DEFAULT):
                continue
            if not all(c in pol.set and pol.set[c] is None for c in fk.child_columns):
                raise PolicyConflict(
                    str(table),
                    f"anonymized rows keep referencing deleted rows through {fk.describe()}; "
                    "set those columns to null",
                )
        for fk in catalog.incoming(table):
            changed = sorted(set(fk.parent_columns) & set(pol.set))
            if changed:
                # ON UPDATE CASCADE or SET NULL would rewrite the referencing rows,
                # whoever's they are (a kept table's, another subject's); NO ACTION
                # would fail the batch. The rows that point at a key are not data to
                # anonymize by rewriting the key.
                raise PolicyConflict(
                    str(table),
                    f"anonymizing {', '.join(changed)} would change the key that"
                    f" {fk.describe()} references; anonymize other columns, or delete",
                )


def check_reassign(
    catalog: Catalog,
    actions: Mapping[TableName, TableAction],
    policies: Mapping[TableName, TablePolicy],
    anchors: Mapping[TableName, object],
) -> list[TableName]:
    """The ``reassign`` tables with references into removed rows; refused where a
    table holds the subject column itself (its rows are the subject's, not only
    linked to it) or where its references into removed rows are not all one-column
    references into one table (one placeholder key cannot serve them)."""
    reassigned = []
    for table, pol in sorted(policies.items()):
        if pol.action is not TableAction.REASSIGN:
            continue
        if table in anchors:
            raise PolicyConflict(
                str(table), "reassign keeps rows, but this table holds the subject column"
            )
        refs = [
            fk
            for fk in catalog.tables[table].foreign_keys
            if actions.get(fk.parent) in REMOVING and fk.on_delete != SET_DEFAULT
        ]
        if not refs:
            continue
        if len({fk.parent for fk in refs}) > 1 or any(len(fk.child_columns) > 1 for fk in refs):
            described = "; ".join(fk.describe() for fk in refs)
            raise PolicyConflict(
                str(table),
                "reassign needs its references into removed rows to be one-column"
                f" references into one table, for one placeholder key: {described}",
            )
        reassigned.append(table)
    return reassigned
