"""The SQL that selects the subject's rows of each table (membership predicates)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from models.erasure import ScalarValue, TableAction
from worker.catalog.model import ForeignKey, TableName
from worker.planning.model import REMOVING, EdgeMode, Plan
from worker.planning.subjects import sendable

_UNROLL_FACTOR = 3
#: How far ``deep_enough`` follows a cycle's rows before it refuses.
MAX_UNROLL = 48


@dataclass
class Predicates:
    """Builds the SQL that selects the subject's rows of each table.

    Used for dry-run counts, pre-flight checks and the final verification; the
    walk's own batches use cheaper key look-ups (see ``worker.execution.walk``).
    """

    plan: Plan
    subject: object
    #: Put the subject's value in named parameters (``bind_values`` gives them) rather
    #: than literals: for a statement built once and run for many subjects.
    parametric: bool = False
    #: A multi-table cycle's membership follows it this many times round (see
    #: ``deep_enough``); a self-referencing table's is a recursive CTE, of any depth.
    unroll: int = _UNROLL_FACTOR
    #: For each table of a multi-table cycle whose members were found level by level
    #: (``worker.execution.cycle_members``) rather than unrolled: the keys of the rows
    #: that belong to the subject only by going round the cycle. Such a table's members
    #: are then those of ``outside_cycle`` and these, whatever the depth.
    known: dict[TableName, list[tuple[Any, ...]]] = field(default_factory=dict)
    _values: dict[tuple[TableName, str], Any] = field(default_factory=dict)
    _ctes: dict[tuple[TableName, int], sa.CTE] = field(default_factory=dict)
    _cte_count: int = 0
    _params: dict[tuple[TableName, str], str] = field(default_factory=dict)

    def subject_value(self, table: TableName, column: str) -> Any:
        key = (table, column)
        if key not in self._values:
            col = self.plan.info(table).columns[column]
            self._values[key] = sendable(self.subject, col.type, f"{table}.{column}")
        return self._values[key]

    def bind_values(self, subject: object) -> dict[str, Any]:
        """A parametric statement's parameters for ``subject``, converted per column
        (``InvalidSubjectValue`` when a column's type cannot hold it)."""
        values = {}
        for (table, column), name in self._params.items():
            col = self.plan.info(table).columns[column]
            values[name] = sendable(subject, col.type, f"{table}.{column}")
        return values

    def session_values(self, subject: object = None) -> list[tuple[Any, Any]]:
        """(type, value) of every subject column, for ``Dialect.bind_subject``: this
        erasure's subject, or (parametric) ``subject``."""
        values = []
        for table, columns in sorted(self.plan.anchors.items()):
            for column in columns:
                col = self.plan.info(table).columns[column]
                if self.parametric:
                    value = sendable(subject, col.type, f"{table}.{column}")
                else:
                    value = self.subject_value(table, column)
                values.append((col.type, value))
        return values

    def _subject_param(self, table: TableName, col: str, type_: Any) -> ColumnElement[Any]:
        # Where the database reads the value from the session, it stays out of the
        # statement's text (which a server logs when the statement fails).
        held = self.plan.dialect.session_value(type_)
        if not self.parametric:
            value = self.subject_value(table, col)
            return sa.literal(value, type_) if held is None or value is None else held
        name = self._params.setdefault((table, col), f"eraser_subject_{len(self._params)}")
        if held is not None:
            return held
        if isinstance(type_, sa.Integer) and not isinstance(type_, sa.Enum):
            # A parameter typed like a narrow column would fail on a wider value (a
            # subject kind held as int here and bigint elsewhere): compare as bigint.
            type_ = sa.BigInteger()
        return sa.bindparam(name, type_=type_)

    def direct(self, table: TableName, alias: sa.FromClause) -> list[ColumnElement[bool]]:
        return [self.equals(table, alias, col) for col in self.plan.anchors.get(table, ())]

    def equals(self, table: TableName, alias: sa.FromClause, col: str) -> ColumnElement[bool]:
        """``col`` holds exactly the subject's value: the indexed comparison, narrowed by
        the dialect where the database compares more loosely than byte equality (a
        collation, citext, a typeless SQLite column)."""
        column = alias.c[col]
        value = self._subject_param(table, col, column.type)
        inexact = col in self.plan.catalog.tables[table].inexact
        return self.plan.dialect.exact_match(column, value, column == value, inexact)

    def guard(self, table: TableName, alias: sa.FromClause) -> ColumnElement[bool] | None:
        """For a table with the subject column: rows that may belong to the subject
        (its value, or NULL) — a row holding another subject's value never does.

        With several subject columns on the table, a row holding the subject's value in
        any of them is the subject's whatever the others hold (a message's sender and
        recipient; ``EmployeeId`` and ``ReportsTo``: employee 3, who reports to the
        subject, goes too, and the rows referencing it are handled as usual)."""
        columns = self.plan.anchors.get(table, ())
        if not columns:
            return None
        undecided = sa.and_(
            *[sa.or_(alias.c[c].is_(None), self.equals(table, alias, c)) for c in columns]
        )
        if len(columns) == 1:
            return undecided
        return sa.or_(undecided, *self.direct(table, alias))

    def member(
        self, table: TableName, alias: sa.FromClause | None = None, depth: int = 0
    ) -> ColumnElement[bool]:
        """Rows of ``table`` (through ``alias``) that belong to the subject.

        Each referenced table's subject rows are a named CTE at the top of the
        statement, so a 20-level chain is 20 flat CTEs rather than 20 nested
        subqueries (SQLite's parser stops at about a dozen), and a table reached by
        several paths is computed once.
        """
        target = alias if alias is not None else self.plan.info(table).table
        if self._by_key(table):
            return self._known_rows(table, target)
        if self._is_tree(table):
            cte = self.member_cte(table, depth)
            cols = self._tree_identity(table)
            return key_in_select([target.c[c] for c in cols], sa.select(*[cte.c[c] for c in cols]))
        return self._member_plain(table, target, depth)

    def member_cte(self, table: TableName, depth: int = 0) -> sa.CTE:
        """The subject's rows of ``table`` as a CTE with the columns children reference."""
        key = (table, depth)
        if key in self._ctes:
            return self._ctes[key]
        info = self.plan.info(table)
        cols = self._cte_columns(table)
        alias = info.table.alias()
        self._cte_count += 1
        name = f"subject_rows_{self._cte_count}"
        if self._is_tree(table):
            cte = self._tree_cte(table, cols, name, depth)
        elif self._by_key(table):
            known = sa.select(*[alias.c[c] for c in cols])
            cte = known.where(self._known_rows(table, alias)).cte(name)
        else:
            sel = sa.select(*[alias.c[c] for c in cols]).where(
                self._member_plain(table, alias, depth)
            )
            cte = sel.cte(name)
        self._ctes[key] = cte
        return cte

    def know(self, known: dict[TableName, list[tuple[Any, ...]]]) -> None:
        """Take ``known`` (see there) for the statements built from now on."""
        self.known = dict(known)
        self._ctes.clear()

    def _by_key(self, table: TableName) -> bool:
        """Whether a multi-table cycle's membership is named by key rather than
        unrolled: where it was found level by level, and on databases that take no
        unrolled statement (MariaDB). There, until the keys are known, only the rows
        that belong to the subject without going round the cycle are named: enough to
        tell whether the subject has any row at all, and what is left of it once its
        own rows are gone (see ``deep_enough``)."""
        if table in self.known:
            return True
        cycle = self.plan.cycle_of.get(table)
        multi = cycle is not None and len(cycle.tables) > 1
        return multi and not self.plan.dialect.unrolls_cycles

    def _known_rows(self, table: TableName, target: sa.FromClause) -> ColumnElement[bool]:
        own = self.outside_cycle(table, target)
        keys = self.known.get(table, [])
        if not keys:
            return own
        columns = [target.c[c] for c in self.plan.info(table).key_columns() or ()]
        return sa.or_(own, self.plan.dialect.key_in(columns, keys))

    def in_cycle_edges(self, table: TableName) -> list[ForeignKey]:
        """The references that carry membership into ``table`` from its own
        multi-table cycle (itself included)."""
        cycle = self.plan.cycle_of.get(table)
        if cycle is None or len(cycle.tables) == 1:
            return []
        return [fk for fk in self._via_edges(table) if fk.parent in cycle.tables]

    def outside_cycle(self, table: TableName, target: sa.FromClause) -> ColumnElement[bool]:
        """Rows of a multi-table cycle's ``table`` that belong to the subject without
        going round the cycle: through its own column or a table outside it."""
        return self._member_plain(table, target, 0, skip_cycle=True)

    def cte_columns(self, table: TableName) -> list[str]:
        """What a table's member CTE holds: its key and every column referenced."""
        return self._cte_columns(table)

    def _is_tree(self, table: TableName) -> bool:
        cycle = self.plan.cycle_of.get(table)
        return cycle is not None and len(cycle.tables) == 1

    def _tree_identity(self, table: TableName) -> list[str]:
        info = self.plan.info(table)
        return list(info.key_columns() or self._cte_columns(table))

    def _cte_columns(self, table: TableName) -> list[str]:
        info = self.plan.info(table)
        cols = list(info.key_columns() or ())
        for fk in self.plan.catalog.incoming(table):
            cols += fk.parent_columns
        return list(dict.fromkeys(cols))

    def _via_edges(self, table: TableName) -> list[ForeignKey]:
        # A link row pointing at a shared (orphan) row is the subject's through its own
        # path already; the edge only orders the removal.
        return [
            e.fk
            for parent in sorted(self.plan.actions)
            for e in self.plan.children.get(parent, [])
            if e.fk.child == table
            and e.mode is EdgeMode.DELETE
            and e.fk not in self.plan.orphan_links.get(parent, ())
        ]

    def _member_plain(
        self,
        table: TableName,
        target: sa.FromClause,
        depth: int,
        skip_self: bool = False,
        skip_cycle: bool = False,
    ) -> ColumnElement[bool]:
        parts: list[ColumnElement[bool]] = list(self.direct(table, target))
        via: list[ColumnElement[bool]] = []
        cycle = self.plan.cycle_of.get(table)
        limit = self.unroll * len(cycle.tables) if cycle else 0
        for fk in self._via_edges(table):
            if skip_self and fk.is_self_reference:
                continue
            in_cycle = cycle is not None and fk.parent in cycle.tables
            if in_cycle and (skip_cycle or depth >= limit):
                continue
            parent = self.member_cte(fk.parent, depth + 1 if in_cycle else depth)
            sub = sa.select(*[parent.c[c] for c in fk.parent_columns])
            via.append(key_in_select([target.c[c] for c in fk.child_columns], sub))
        if via:
            via_pred = sa.or_(*via)
            guard = self.guard(table, target)
            parts.append(sa.and_(via_pred, guard) if guard is not None else via_pred)
        if table in self.plan.orphan_links:
            parts.append(self.orphan(table, target))
        return sa.or_(*parts) if parts else sa.false()

    def _tree_cte(self, table: TableName, cols: list[str], name: str, depth: int) -> sa.CTE:
        info = self.plan.info(table)
        self_fks = [fk for fk in self._via_edges(table) if fk.is_self_reference]
        for fk in self_fks:
            cols = list(dict.fromkeys([*cols, *fk.parent_columns]))
        base_alias = info.table.alias()
        base = sa.select(*[base_alias.c[c] for c in cols]).where(
            self._member_plain(table, base_alias, depth, skip_self=True)
        )
        cte = base.cte(name, recursive=True)
        # One recursive term joining through any of the self-references: PostgreSQL
        # takes one reference to the CTE in the recursive part, and ``UNION`` of several
        # terms would nest the first of them in the non-recursive part.
        step = info.table.alias()
        conds = [
            sa.and_(
                *[
                    step.c[c] == cte.c[p]
                    for c, p in zip(fk.child_columns, fk.parent_columns, strict=True)
                ]
            )
            for fk in self_fks
        ]
        sel = sa.select(*[step.c[c] for c in cols]).join_from(step, cte, sa.or_(*conds))
        guard = self.guard(table, step)
        return cte.union(sel.where(guard) if guard is not None else sel)

    def orphan(self, table: TableName, target: sa.FromClause) -> ColumnElement[bool]:
        """Shared rows linked by the subject and referenced by no other row."""
        linked: list[ColumnElement[bool]] = []
        for fk in self.plan.orphan_links[table]:
            link = self.plan.info(fk.child).table.alias()
            sub = sa.select(*[link.c[c] for c in fk.child_columns]).where(
                self.member(fk.child, link)
            )
            linked.append(key_in_select([target.c[c] for c in fk.parent_columns], sub))
        others: list[ColumnElement[bool]] = []
        links = self.plan.orphan_links[table]
        for fk in self.plan.catalog.incoming(table):
            owned = fk.child in self.plan.actions and fk.child not in self.plan.orphan_links
            if fk not in links and owned:
                continue  # rows owned by the shared row: they go with it
            # (A shared row that another shared row references, a parent tag say, is
            # not orphaned: the other may be another subject's.)
            ref = self.plan.info(fk.child).table.alias()
            join = sa.and_(
                *[
                    ref.c[c] == target.c[p]
                    for c, p in zip(fk.child_columns, fk.parent_columns, strict=True)
                ]
            )
            cond: ColumnElement[bool] = join
            if fk in links:
                cond = sa.and_(join, is_not(self.member(fk.child, ref)))
            others.append(sa.exists(sa.select(sa.literal(1)).select_from(ref).where(cond)))
        return sa.and_(sa.or_(*linked), sa.not_(sa.or_(*others)) if others else sa.true())

    def anonymized(self, table: TableName, target: sa.FromClause) -> ColumnElement[bool]:
        """Rows whose anonymized columns already hold the policy's values."""
        pol = self.plan.policies[table]
        return sa.and_(
            *[
                target.c[col].is_not_distinct_from(_literal(val, target.c[col].type))
                for col, val in pol.set.items()
            ]
        )

    def remaining(self, table: TableName) -> ColumnElement[bool]:
        """What must be gone (or anonymized) after the erasure, for verification."""
        target = self.plan.info(table).table
        pred = self.member(table, target)
        if self.plan.actions[table] is TableAction.ANONYMIZE:
            return sa.and_(pred, sa.not_(self.anonymized(table, target)))
        return pred

    def nullify_targets(
        self, table: TableName, mode: EdgeMode = EdgeMode.NULLIFY
    ) -> list[ColumnElement[bool]]:
        """For each SET NULL reference of ``table`` into rows that will be removed: the
        rows (not themselves erased) whose reference will be cleared. One predicate per
        reference: a row with two such references counts twice, as the erasure does.
        (With ``mode`` ``REASSIGN``: the references moved to the placeholder.)"""
        target = self.plan.info(table).table
        erased = self.plan.actions.get(table) in REMOVING
        preds = []
        for parent in sorted(self.plan.actions):
            if self.plan.actions[parent] not in REMOVING:
                continue
            for edge in self.plan.children.get(parent, []):
                if edge.fk.child != table or edge.mode is not mode:
                    continue
                fk = edge.fk
                members = self.member_cte(parent)
                sub = sa.select(*[members.c[c] for c in fk.parent_columns])
                pred = key_in_select([target.c[c] for c in fk.child_columns], sub)
                if erased:
                    pred = sa.and_(pred, is_not(self.member(table, target)))
                preds.append(pred)
        return preds


def is_not(pred: ColumnElement[bool]) -> ColumnElement[bool]:
    """``NOT pred`` that is true where ``pred`` is NULL (a NULL subject column makes a
    plain NOT unknown, and the row would silently drop out)."""
    return sa.case((pred, sa.false()), else_=sa.true())


def _literal(value: ScalarValue, type_: sa.types.TypeEngine[Any]) -> ColumnElement[Any]:
    if value is None:
        return sa.null()
    return sa.literal(value, type_)


def key_in_select(
    columns: Sequence[ColumnElement[Any]], select: sa.Select[Any]
) -> ColumnElement[bool]:
    """``columns IN (select)``, as a row value when the key has several columns."""
    if len(columns) == 1:
        return columns[0].in_(select)
    return sa.tuple_(*columns).in_(select)
