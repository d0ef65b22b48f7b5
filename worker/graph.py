"""Graph algorithms the planner needs: strongly connected components and a
deterministic child-first order. Plain functions over hashable, orderable nodes."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, Protocol, TypeVar


class _Orderable(Hashable, Protocol):
    def __lt__(self, other: Any, /) -> bool: ...


N = TypeVar("N", bound=_Orderable)


def strongly_connected_components(  # noqa: C901 - Tarjan's algorithm reads best as one loop
    nodes: Iterable[N], successors: Callable[[N], Iterable[N]]
) -> list[list[N]]:
    """Tarjan's algorithm, iterative (schemas can be deeper than Python's recursion).

    Components come out in reverse topological order: a component is listed
    before every component that reaches it.
    """
    index: dict[N, int] = {}
    low: dict[N, int] = {}
    on_stack: set[N] = set()
    stack: list[N] = []
    result: list[list[N]] = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work: list[tuple[N, list[N]]] = [(root, sorted(successors(root)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop(0)
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(successors(nxt))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[N] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                result.append(sorted(component))
    return result


def children_first(
    nodes: Iterable[N], children: Mapping[N, Iterable[N]]
) -> tuple[list[N], list[list[N]]]:
    """Order ``nodes`` so every node comes after all of its children.

    ``children[p]`` are the nodes that reference ``p`` (and so must go first).
    Returns the order and the cyclic components (size > 1, or a self-loop),
    whose members are kept together in the order.
    """
    node_list = sorted(set(nodes))
    node_set = set(node_list)

    def succ(n: N) -> Iterable[N]:
        return [c for c in children.get(n, ()) if c in node_set]

    # Tarjan lists a component before the components that reach it; with edges
    # parent -> child, that puts children before their parents.
    components = strongly_connected_components(node_list, succ)
    order: list[N] = []
    cycles: list[list[N]] = []
    for comp in components:
        order.extend(comp)
        if len(comp) > 1 or comp[0] in set(succ(comp[0])):
            cycles.append(comp)
    return order, cycles


def find_cycle(component: list[N], successors: Callable[[N], Iterable[N]]) -> list[N]:
    """One concrete cycle inside a strongly connected component, first node repeated."""
    members = set(component)
    start = component[0]
    path = [start]
    seen = {start}
    node = start
    while True:
        options = sorted(s for s in successors(node) if s in members)
        if (start in options and len(path) > 1) or options == [start]:
            return [*path, start]
        nxt = next((s for s in options if s not in seen), None)
        if nxt is None:
            # Every successor was visited: close the loop at the first repeat.
            repeat = options[0]
            return [*path[path.index(repeat) :], repeat]
        path.append(nxt)
        seen.add(nxt)
        node = nxt
