"""What a definition depends on: referenced segments, cycles, evaluation order, fast-path flags."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from graphlib import TopologicalSorter

from streamapp.segments.definition import DefinitionError
from streamapp.segments.nodes import (
    RELATIVE_OPS,
    All,
    AnyOf,
    AttributeLeaf,
    HistoryLeaf,
    Leaf,
    Node,
    Not,
    SegmentLeaf,
)

__all__ = [
    "CycleError",
    "check_acyclic",
    "dependency_order",
    "find_cycle",
    "is_attribute_only",
    "is_time_relative",
    "leaves",
    "references",
]


class CycleError(DefinitionError):
    """Segments that reference each other in a loop; `cycle` is the loop, first name repeated last."""

    def __init__(self, cycle: list[str], path: str) -> None:
        self.cycle = cycle
        super().__init__([(path, "segment cycle: " + " -> ".join(cycle))])


def leaves(node: Node, path: str = "") -> Iterator[tuple[str, Leaf]]:
    """Every leaf with its JSON Pointer."""
    if isinstance(node, All | AnyOf):
        key = "all" if isinstance(node, All) else "any"
        for i, child in enumerate(node.children):
            yield from leaves(child, f"{path}/{key}/{i}")
    elif isinstance(node, Not):
        yield from leaves(node.child, f"{path}/not")
    else:
        yield path, node


def references(node: Node) -> frozenset[str]:
    """Names of the segments this definition reads: they must be evaluated before it."""
    return frozenset(leaf.segment for _, leaf in leaves(node) if isinstance(leaf, SegmentLeaf))


def is_time_relative(node: Node) -> bool:
    """Whether the value can change with the clock alone (a `within` window or a relative op)."""
    return any(_leaf_is_relative(leaf) for _, leaf in leaves(node))


def is_attribute_only(node: Node) -> bool:
    """Only attribute leaves with no clock-relative op: a build needs neither history nor a timer."""
    return all(isinstance(leaf, AttributeLeaf) and not _leaf_is_relative(leaf) for _, leaf in leaves(node))


def _leaf_is_relative(leaf: Leaf) -> bool:
    if isinstance(leaf, AttributeLeaf):
        return leaf.test.op in RELATIVE_OPS
    if isinstance(leaf, HistoryLeaf):
        return leaf.within is not None or (leaf.test is not None and leaf.test.op in RELATIVE_OPS)
    return False


def find_cycle(definitions: Mapping[str, Node]) -> list[str] | None:
    """A reference loop among the definitions (`["a", "b", "a"]`), or None; unknown names are ignored."""
    edges = {name: sorted(references(node) & definitions.keys()) for name, node in definitions.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(definitions):
        found = _walk(root, edges, state, [])
        if found:
            return found
    return None


def _walk(name: str, edges: Mapping[str, list[str]], state: dict[str, int], path: list[str]) -> list[str] | None:
    """Depth-first search; iterative over a path stack so deep chains cannot hit the recursion limit."""
    if state.get(name) == 2:
        return None
    stack: list[tuple[str, Iterator[str]]] = [(name, iter(edges[name]))]
    path.append(name)
    state[name] = 1
    while stack:
        current, targets = stack[-1]
        target = next(targets, None)
        if target is None:
            stack.pop()
            path.pop()
            state[current] = 2
        elif state.get(target) == 1:
            return [*path[path.index(target) :], target]
        elif state.get(target) != 2:
            state[target] = 1
            path.append(target)
            stack.append((target, iter(edges[target])))
    return None


def check_acyclic(definitions: Mapping[str, Node]) -> None:
    """CycleError naming the loop and the place, in the first segment's definition, of its reference."""
    cycle = find_cycle(definitions)
    if cycle is None:
        return
    first, second = cycle[0], cycle[1]
    path = next(p for p, leaf in leaves(definitions[first]) if isinstance(leaf, SegmentLeaf) and leaf.segment == second)
    raise CycleError(cycle, f"{path}/segment")


def dependency_order(definitions: Mapping[str, Node]) -> list[str]:
    """Names with every referenced segment before the segments that read it; CycleError on a loop."""
    check_acyclic(definitions)
    sorter: TopologicalSorter[str] = TopologicalSorter()
    for name in sorted(definitions):
        sorter.add(name, *sorted(references(definitions[name]) & definitions.keys()))
    return list(sorter.static_order())
