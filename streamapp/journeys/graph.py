"""The step graph of a journey: every step reachable, and no loop that would run forever at once.

Targets are already resolved (an unknown name is a parse error). A loop is allowed only through a
step that always pauses the run (`nodes.pauses`: a duration or until wait, a `wait_for`, a date
attribute wait): a loop of sends, conditions, splits and updates alone would spin in one input's
processing, so it is refused before it can stall a worker.
"""

from __future__ import annotations

from collections.abc import Sequence

from streamapp.journeys.nodes import END, Step, pauses, targets

__all__ = ["check_steps", "instant_loop", "unreachable"]


def check_steps(steps: Sequence[Step]) -> list[tuple[str, str]]:
    """(JSON Pointer, message) for every unreachable step and the first loop without a pause."""
    errors = [(f"/steps/{i}", "unreachable: no step leads here from the first") for i in unreachable(steps)]
    loop = instant_loop(steps)
    if loop is not None:
        names = " -> ".join(steps[i].id for i in [*loop, loop[0]])
        errors.append((f"/steps/{loop[0]}", f"the loop {names} has no wait or wait_for: it would run forever at once"))
    return errors


def unreachable(steps: Sequence[Step]) -> list[int]:
    """Indexes of the steps no path from the first step reaches, in order."""
    seen = {0}
    todo = [0]
    while todo:
        for target in targets(steps[todo.pop()].action):
            if target != END and target not in seen:
                seen.add(target)
                todo.append(target)
    return [i for i in range(len(steps)) if i not in seen]


def instant_loop(steps: Sequence[Step]) -> list[int] | None:
    """The steps of one loop through which a run never pauses, in order, or None."""
    state = [0] * len(steps)  # 0 unseen, 1 on the current path, 2 done
    for start in range(len(steps)):
        if state[start] == 0:
            found = _walk(steps, start, state)
            if found is not None:
                return found
    return None


def _walk(steps: Sequence[Step], start: int, state: list[int]) -> list[int] | None:
    """Iterative depth-first search over the edges that do not pause."""
    path: list[int] = [start]
    pending: list[list[int]] = [_instant_targets(steps, start)]
    state[start] = 1
    while path:
        if not pending[-1]:
            state[path.pop()] = 2
            pending.pop()
            continue
        target = pending[-1].pop()
        if state[target] == 1:
            return path[path.index(target) :]
        if state[target] == 0:
            state[target] = 1
            path.append(target)
            pending.append(_instant_targets(steps, target))
    return None


def _instant_targets(steps: Sequence[Step], i: int) -> list[int]:
    action = steps[i].action
    return [] if pauses(action) else [t for t in targets(action) if t != END]
