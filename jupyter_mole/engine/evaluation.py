"""Evaluating a puzzle on a batch of contexts: capsules, sequences and methods, streamed.

Results flow as they come. Each puzzle hands its results to a *sink* as soon
as a part of its batch is done: a capsule when a chunk of jobs returns, a
sequence when its last part returns for some rows (the next part starts on
the rows the previous one finished, without waiting for the rest), a method
when all the points of an enclosing context are done. Hooks see rows chunk by
chunk, so a CSV file grows while the execution runs.

A method pulls its points from the sampling a batch at a time (the first
batch holds one point, so a job starts at once) and keeps a few batches in
flight; the sampling itself is never listed.
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

__all__ = ["Evaluator", "Sink"]

FIRST_BATCH = 1
LARGEST_BATCH = 16_384
BATCHES_IN_FLIGHT = 4

Sink = Callable[[list[int], Batch], None]
"""Receives results: for rows ``indexes`` of the input batch, their outputs (row i of the batch)."""


def _merge(
    left: tuple[str, ...], right: tuple[str, ...]
) -> tuple[tuple[str, ...], list[int] | None]:
    """Names of ``left + right`` where ``right`` wins a clash, and which ``left`` columns stay."""
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
        """Run ``puzzle`` on every row of ``batch``; all results, in the order of the rows."""
        results: list[tuple[Any, ...] | None] = [None] * len(batch.rows)
        names: list[tuple[str, ...]] = [()]

        def collect(indexes: list[int], out: Batch) -> None:
            names[0] = out.names
            for i, row in zip(indexes, out.rows):
                results[i] = row

        await self.stream(puzzle, batch, collect)
        return Batch(names[0], results)  # type: ignore[arg-type]

    async def stream(self, puzzle: Puzzle, batch: Batch, sink: Sink) -> None:
        """Run ``puzzle`` on every row of ``batch``, handing results to ``sink`` as they come."""
        if not batch.rows:
            return
        if isinstance(puzzle, Capsule):

            def hooked(indexes: list[int], out: Batch) -> None:
                self.hook(puzzle, puzzle.hooks, out)
                sink(indexes, out)

            await self.runtime_for(puzzle.environment).run(puzzle, batch, hooked)
        elif isinstance(puzzle, Sequence):
            await self._sequence(puzzle.parts, batch, sink)
        elif isinstance(puzzle, Method):
            await _MethodRun(self, puzzle, batch, sink).run()
        else:
            raise WorkflowError(f"cannot run {puzzle!r}: it is not a task, a method or a puzzle")

    async def _sequence(self, parts: tuple[Puzzle, ...], batch: Batch, sink: Sink) -> None:
        first, rest = parts[0], parts[1:]
        if not rest:
            await self.stream(first, batch, sink)
            return
        async with asyncio.TaskGroup() as group:

            def next_part(indexes: list[int], out: Batch) -> None:
                def back(inner: list[int], result: Batch) -> None:
                    sink([indexes[i] for i in inner], result)

                group.create_task(self._sequence(rest, out, back))

            await self.stream(first, batch, next_part)

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

        The environments share large batches among their workers in chunks
        of the right size; small intermediate batches would only add round
        trips. Batches come in whole ``.by(n)`` groups.
        """
        size = self._batch_sizes.get(id(method))
        if size is None:
            unit = max((c.grouping or 1 for c in method.evaluation.capsules()), default=1)
            self._batch_sizes[id(method)] = max(unit, LARGEST_BATCH // unit * unit)
            return FIRST_BATCH * unit
        return size


class _MethodRun:
    """One method over a batch of enclosing contexts (one context at the top level)."""

    def __init__(self, evaluator: Evaluator, method: Method, parents: Batch, sink: Sink) -> None:
        self.evaluator = evaluator
        self.method = method
        self.parents = parents
        self.sink = sink
        point_names = tuple(v.name for v in method.sampling.vals)
        self.inner_names, self.parent_keep = _merge(parents.names, point_names)
        self.aggregated: list[list[list[tuple[int, Any]]]] = [
            [[] for _ in method.aggregation] for _ in parents.rows
        ]
        self.pending = [0] * len(parents.rows)  # points drawn and not yet done, per parent
        self.drawn = [False] * len(parents.rows)  # every point of the parent has been drawn
        out_names = tuple(a.output.name for a in method.aggregation)
        self.out_names, self.out_keep = _merge(parents.names, out_names)

    def _points(self) -> Iterator[tuple[int, int, tuple[Any, ...]]]:
        """(enclosing context, sample order, row) for every point, lazily."""
        keep = self.parent_keep
        order = itertools.count()
        for p, parent in enumerate(self.parents.rows):
            if p:
                self._drawn(p - 1)
            for values in self.method.points():
                self.pending[p] += 1
                yield p, next(order), _join(parent, values, keep)
        if self.parents.rows:
            self._drawn(len(self.parents.rows) - 1)

    def _drawn(self, parent: int) -> None:
        self.drawn[parent] = True
        if self.pending[parent] == 0:
            self._emit(parent)

    async def run(self) -> None:
        points = self._points()
        in_flight = asyncio.Semaphore(BATCHES_IN_FLIGHT)
        async with asyncio.TaskGroup() as group:
            while True:
                await in_flight.acquire()
                items = list(itertools.islice(points, self.evaluator.next_batch_size(self.method)))
                if not items:
                    in_flight.release()
                    break
                group.create_task(self._batch(items, in_flight))
                await asyncio.sleep(0)  # let the batch go out before the next one is drawn
        for parent, drawn in enumerate(self.drawn):
            if not drawn:  # a sampling with no point at all
                self._drawn(parent)

    async def _batch(
        self, items: list[tuple[int, int, tuple[Any, ...]]], slot: asyncio.Semaphore
    ) -> None:
        inner = Batch(self.inner_names, [row for _, _, row in items])

        def done(indexes: list[int], out: Batch) -> None:
            self._results([items[i] for i in indexes], inner, indexes, out)

        try:
            await self.evaluator.stream(self.method.evaluation, inner, done)
        finally:
            slot.release()

    def _results(
        self,
        items: list[tuple[int, int, tuple[Any, ...]]],
        inner: Batch,
        indexes: list[int],
        out: Batch,
    ) -> None:
        method = self.method
        names, keep = _merge(self.inner_names, out.names)
        rows = [_join(inner.rows[i], row, keep) for i, row in zip(indexes, out.rows)]
        finished = [p for p, _, _ in items]
        if method.condition is not None:
            kept = [i for i, row in enumerate(rows) if method.keeps(dict(zip(names, row)))]
            rows = [rows[i] for i in kept]
            items = [items[i] for i in kept]
        if not method.aggregation:
            self.evaluator.hook(method, method.hooks, Batch(names, rows))
        else:
            columns = [names.index(a.source.name) for a in method.aggregation]
            for (parent, order, _), row in zip(items, rows):
                for target, column in zip(self.aggregated[parent], columns):
                    target.append((order, row[column]))
        for parent in finished:
            self.pending[parent] -= 1
            if self.pending[parent] == 0 and self.drawn[parent]:
                self._emit(parent)

    def _emit(self, parent: int) -> None:
        """All points of ``parent`` are done: hand on its context, with the aggregated values."""
        row = self.parents.rows[parent]
        if not self.method.aggregation:
            self.sink([parent], Batch(self.parents.names, [row]))
            return
        values = []
        for aggregation, collected in zip(self.method.aggregation, self.aggregated[parent]):
            collected.sort(key=lambda item: item[0])
            values.append(_aggregate(aggregation, [value for _, value in collected]))
        self.aggregated[parent] = []
        result = Batch(self.out_names, [_join(row, tuple(values), self.out_keep)])
        self.evaluator.hook(self.method, self.method.hooks, result)
        self.sink([parent], result)


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
