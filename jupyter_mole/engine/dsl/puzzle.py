"""Puzzles: how tasks and methods are put together into a workflow.

OpenMOLE builds workflows from *capsules* (a task with its environment, its
grouping and its hooks) joined by transitions. Here ``a >> b`` is OpenMOLE's
``a -- b``, ``t.on(env)`` its ``t on env``, ``t.by(n)`` its ``t by n`` and
``t.hook(h)`` its ``t hook h``. Every operation returns a new puzzle: a task or
a method can appear in two workflows without one changing the other.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import WorkflowError

if TYPE_CHECKING:
    from .environments import Environment
    from .hooks import Hook
    from .tasks import Task
    from .values import Val

__all__ = ["Capsule", "Puzzle", "Sequence", "as_hook", "as_puzzle", "describe"]


class Puzzle:
    """Anything a script's last line may be: a task, a capsule, a sequence, a method."""

    def on(self, environment: Environment) -> Puzzle:
        """Run the jobs of this puzzle that have no environment of their own on ``environment``."""
        from .environments import Environment

        if not isinstance(environment, Environment):
            raise WorkflowError(
                f".on() takes an environment such as LocalEnvironment(2), "
                f"got {type(environment).__name__}"
            )
        return self._map_capsules(
            lambda c: c if c.environment is not None else c.replace(environment=environment)
        )

    def by(self, n: int) -> Puzzle:
        """Group ``n`` jobs into one environment job (OpenMOLE's ``by``)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise WorkflowError(f".by(n) takes a whole number of jobs of 1 or more, got {n!r}")
        return self._map_capsules(lambda c: c if c.grouping else c.replace(grouping=n))

    def hook(self, *hooks: Any) -> Puzzle:
        """Send this puzzle's results to hooks: ``display``, a ``.csv`` path, a CSVHook..."""
        raise NotImplementedError

    def __rshift__(self, other: Any) -> Sequence:
        return Sequence(self, as_puzzle(other))

    def __rrshift__(self, other: Any) -> Sequence:
        return Sequence(as_puzzle(other), self)

    def capsules(self) -> Iterator[Capsule]:
        """Every capsule inside this puzzle, depth first."""
        raise NotImplementedError

    def provides(self, available: dict[str, Val]) -> dict[str, Val]:
        """The values this puzzle produces given what is ``available``; raises if an input is missing."""
        raise NotImplementedError

    def all_hooks(self) -> Iterator[Hook]:
        """Every hook inside this puzzle (on its tasks, its methods, its parts), depth first."""
        for capsule in self.capsules():
            yield from capsule.hooks

    def _map_capsules(self, f: Callable[[Capsule], Capsule]) -> Puzzle:
        raise NotImplementedError


def as_puzzle(obj: Any) -> Puzzle:
    """A task becomes a capsule; a puzzle stays itself; anything else is a WorkflowError."""
    from .tasks import Task

    if isinstance(obj, Task):
        return Capsule(obj)
    if isinstance(obj, Puzzle):
        return obj
    raise WorkflowError(f"expected a task, a method or a puzzle, got {describe(obj)}")


def describe(obj: Any) -> str:
    """A short, user-facing name for a Python object's kind: "a `list`"."""
    return f"a `{type(obj).__name__}`"


def as_hook(obj: Any) -> Hook:
    """``display``, a hook object, or a path (``work_directory / "x.csv"``) made a CSV hook."""
    from .hooks import CSVHook, Hook

    if isinstance(obj, Hook):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return CSVHook(obj)
    raise WorkflowError(
        f".hook() takes display, a path ending in .csv, or a hook such as CSVHook(...), "
        f"got {describe(obj)}"
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Capsule(Puzzle):
    """A task with where it runs, how its jobs are grouped, and where its results go."""

    task: Task
    environment: Environment | None = None
    grouping: int | None = None
    hooks: tuple[Hook, ...] = ()

    @property
    def name(self) -> str:
        return self.task.name

    def replace(self, **changes: Any) -> Capsule:
        return dataclasses.replace(self, **changes)

    def hook(self, *hooks: Any) -> Capsule:
        return self.replace(hooks=self.hooks + tuple(as_hook(h) for h in hooks))

    def capsules(self) -> Iterator[Capsule]:
        yield self

    def provides(self, available: dict[str, Val]) -> dict[str, Val]:
        self.task.check_available(available)
        outs = {v.name: v for v in self.task.outputs}
        for hook in self.hooks:
            hook.check(outs, where=f"the hook of task {self.name}")
        return outs

    def _map_capsules(self, f: Callable[[Capsule], Capsule]) -> Capsule:
        return f(self)

    def __repr__(self) -> str:
        return f"Capsule({self.name})"


class Sequence(Puzzle):
    """``a >> b``: ``b`` runs on each result of ``a``, seeing only ``a``'s outputs."""

    def __init__(self, *parts: Puzzle) -> None:
        flat: list[Puzzle] = []
        for part in parts:
            part = as_puzzle(part)
            flat.extend(part.parts if isinstance(part, Sequence) else [part])
        self.parts: tuple[Puzzle, ...] = tuple(flat)

    def hook(self, *hooks: Any) -> Sequence:
        *head, last = self.parts
        return Sequence(*head, last.hook(*hooks))

    def capsules(self) -> Iterator[Capsule]:
        for part in self.parts:
            yield from part.capsules()

    def all_hooks(self) -> Iterator[Hook]:
        for part in self.parts:
            yield from part.all_hooks()

    def provides(self, available: dict[str, Val]) -> dict[str, Val]:
        for part in self.parts:
            available = part.provides(available)
        return available

    def _map_capsules(self, f: Callable[[Capsule], Capsule]) -> Sequence:
        return Sequence(*(p._map_capsules(f) for p in self.parts))

    def __repr__(self) -> str:
        return " >> ".join(repr(p) for p in self.parts)
