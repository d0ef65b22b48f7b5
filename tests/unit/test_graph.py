"""Graph algorithms behind the planner's order."""

from __future__ import annotations

import itertools

import pytest

from worker.graph import children_first, find_cycle, strongly_connected_components


def test_children_come_before_parents() -> None:
    # tenants <- customers <- orders <- items; orders also <- payments
    children = {
        "tenants": ["customers"],
        "customers": ["orders"],
        "orders": ["items", "payments"],
    }
    order, cycles = children_first(
        ["tenants", "customers", "orders", "items", "payments"], children
    )
    assert cycles == []
    for parent, kids in children.items():
        for kid in kids:
            assert order.index(kid) < order.index(parent)


@pytest.mark.parametrize(
    ("children", "expected_cycles"),
    [
        ({"a": ["a"]}, [["a"]]),  # self-reference
        ({"a": ["b"], "b": ["a"]}, [["a", "b"]]),  # two-table cycle
        ({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}, [["a", "b", "c"]]),  # plus a tail
        ({"a": ["b"], "b": ["c"]}, []),  # a chain is not a cycle
    ],
)
def test_cycles_are_reported(
    children: dict[str, list[str]], expected_cycles: list[list[str]]
) -> None:
    nodes = set(children) | {c for kids in children.values() for c in kids}
    _, cycles = children_first(nodes, children)
    assert cycles == expected_cycles


def test_deep_graph_does_not_hit_recursion_limit() -> None:
    n = 5000
    children = {f"t{i:05d}": [f"t{i + 1:05d}"] for i in range(n - 1)}
    order, cycles = children_first([f"t{i:05d}" for i in range(n)], children)
    assert cycles == []
    assert order[0] == f"t{n - 1:05d}"
    assert order[-1] == "t00000"


def test_find_cycle_returns_a_closed_path() -> None:
    succ = {"a": ["b"], "b": ["c"], "c": ["a", "b"]}
    comp = strongly_connected_components(["a", "b", "c"], lambda n: succ[n])
    assert comp == [["a", "b", "c"]]
    path = find_cycle(comp[0], lambda n: succ[n])
    assert path[0] == path[-1]
    for here, nxt in itertools.pairwise(path):
        assert nxt in succ[here]
