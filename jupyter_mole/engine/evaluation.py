"""Evaluating a puzzle on a batch of contexts: capsules, sequences and methods.

A method pulls its points from the sampling a batch at a time (the first batch
holds one point, so the first job starts at once; later ones grow to keep the
workers busy) and keeps a few batches in flight. Nothing here waits for all
points before hooking: rows go to the hooks as each batch finishes.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from typing import Any

from .batch import Batch
from .context import ExecutionContext
from .dsl.environments import Environment
from .dsl.hooks import Hook, HookContext, HookWriter
from .dsl.methods import Method
from .dsl.puzzle import Capsule, Puzzle, Sequence
from .dsl.values import Aggregation, check_value
from .environments.runtime import EnvironmentRuntime
from .errors import WorkflowError

__all__ = ["Evaluator"]

FIRST_BATCH = 1
LARGEST_BATCH = 16_384
BATCHES_IN_FLIGHT = 4


def _merge(
    left: tuple[str, ...], right: tuple[str, ...]
) -> tuple[tuple[str, ...], list[int] | None]:
    """Names of ``left + right`` where ``right`` wins a clash, and which ``left`` columns to keep."""
    clash = set(left) & set(right)
    if not clash:
        return left + right, None
    keep = [i for i, name in enumerate(left) if name not in clash]
    return tuple(left[i] for i in keep) + right, keep


def _join(left: tuple[Any, ...], right: tuple[Any, ...], keep: list[int] | None) -> tuple[Any, ...]:
    if keep is None:
        return left + right
    return tuple(left[i] for i in keep) + right


class Evaluator:
    """Runs puzzles for one execution; owns the execution's hook writers."""

    def __init__(
        self,
        context: ExecutionContext,
        runtime_for: Callable[[Environment | None], EnvironmentRuntime],
    ) -> None:
        self.context = context
        self.runtime_for = runtime_for
        self.hook_context = HookContext(context.work_directory, context.output.write)
        self._writers: dict[tuple[int, int], HookWriter] = {}
        self._batch_sizes: dict[int, int] = {}

    async def run(self, puzzle: Puzzle, batch: Batch) -> Batch:
        if not batch.rows:
            return Batch(batch.names, [])
        if isinstance(puzzle, Capsule):
            out = await self.runtime_for(puzzle.environment).run(puzzle, batch)
            self.hook(puzzle, puzzle.hooks, out)
            return out
        if isinstance(puzzle, Sequence):
            for part in puzzle.parts:
                batch = await self.run(part, batch)
            return batch
        if isinstance(puzzle, Method):
            return await _MethodRun(self, puzzle, batch).run()
        raise WorkflowError(f"cannot run {puzzle!r}: it is not a task, a method or a puzzle")

    def hook(self, owner: object, hooks: tuple[Hook, ...], batch: Batch) -> None:
        if not batch.rows:
            return
        for hook in hooks:
            key = (id(owner), id(hook))
            writer = self._writers.get(key)
            if writer is None:
                writer = self._writers[key] = hook.open(self.hook_context, batch.names)
            writer.write(batch.names, batch.rows)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()

    def next_batch_size(self, method: Method) -> int:
        """One point first, so that a job starts at once; then large batches.

        The environments time that first job and split large batches into
        chunks of the right size; small intermediate batches would only add
        round trips.
        """
        size = self._batch_sizes.get(id(method))
        if size is None:
            # Batches in whole groups, so that `.by(n)` makes groups of n, not of what a batch left.
            unit = max((c.grouping or 1 for c in method.evaluation.capsules()), default=1)
            self._batch_sizes[id(method)] = max(unit, LARGEST_BATCH // unit * unit)
            return FIRST_BATCH * unit
        return size


class _MethodRun:
    """One method over a batch of enclosing contexts (one context at the top level)."""

    def __init__(self, evaluator: Evaluator, method: Method, parents: Batch) -> None:
        self.evaluator = evaluator
        self.method = method
        self.parents = parents
        point_names = tuple(v.name for v in method.sampling.vals)
        self.inner_names, self.parent_keep = _merge(parents.names, point_names)
        self.aggregated: list[list[list[tuple[int, Any]]]] = [
            [[] for _ in method.aggregation] for _ in parents.rows
        ]

    def _points(self) -> Iterator[tuple[int, int, tuple[Any, ...]]]:
        """(enclosing context, sample order, row) for every point, lazily."""
        keep = self.parent_keep
        order = itertools.count()
        for p, parent in enumerate(self.parents.rows):
            for values in self.method.points():
                yield p, next(order), _join(parent, values, keep)

    async def run(self) -> Batch:
        points = self._points()
        in_flight = asyncio.Semaphore(BATCHES_IN_FLIGHT)
        async with asyncio.TaskGroup() as group:
            while True:
                items = list(itertools.islice(points, self.evaluator.next_batch_size(self.method)))
                if not items:
                    break
                await in_flight.acquire()
                group.create_task(self._batch(items, in_flight))
                await asyncio.sleep(0)  # let the batch go out before the next one is drawn
        return self._result()

    async def _batch(
        self, items: list[tuple[int, int, tuple[Any, ...]]], slot: asyncio.Semaphore
    ) -> None:
        try:
            inner = Batch(self.inner_names, [row for _, _, row in items])
            out = await self.evaluator.run(self.method.evaluation, inner)
            names, keep = _merge(self.inner_names, out.names)
            rows = [_join(a, b, keep) for a, b in zip(inner.rows, out.rows)]
            if self.method.condition is not None:
                kept = [i for i, row in enumerate(rows) if self.method.keeps(dict(zip(names, row)))]
                rows = [rows[i] for i in kept]
                items = [items[i] for i in kept]
            if not self.method.aggregation:
                self.evaluator.hook(self.method, self.method.hooks, Batch(names, rows))
                return
            columns = [names.index(a.source.name) for a in self.method.aggregation]
            for (parent, order, _), row in zip(items, rows):
                for target, column in zip(self.aggregated[parent], columns):
                    target.append((order, row[column]))
        finally:
            slot.release()

    def _result(self) -> Batch:
        if not self.method.aggregation:
            return self.parents
        out_names = tuple(a.output.name for a in self.method.aggregation)
        names, keep = _merge(self.parents.names, out_names)
        rows = []
        for parent, lists in zip(self.parents.rows, self.aggregated):
            values = []
            for aggregation, collected in zip(self.method.aggregation, lists):
                collected.sort(key=lambda item: item[0])
                values.append(_aggregate(aggregation, [value for _, value in collected]))
            rows.append(_join(parent, tuple(values), keep))
        result = Batch(names, rows)
        self.evaluator.hook(self.method, self.method.hooks, result)
        return result


def _aggregate(aggregation: Aggregation, values: list[Any]) -> Any:
    try:
        result = aggregation.apply(values)
    except Exception as e:
        raise WorkflowError(
            f"the aggregation {aggregation!r} failed on {len(values)} values: "
            f"{type(e).__name__}: {e}"
        ) from e
    if aggregation.target is not None:
        result = check_value(aggregation.target, result, f"the aggregation {aggregation!r}")
    return result
