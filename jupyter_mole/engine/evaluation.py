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
        """Run ``puzzle`` on every row of ``batch``; all results, in the order of the rows.

        The execution's whole run: its hooks are started first, so that a CSV
        file is replaced even when no row comes.
        """
        started: set[int] = set()
        for hook in puzzle.all_hooks():
            if id(hook) not in started:
                started.add(id(hook))
                hook.start(self.hook_context)
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


class _Draw:
    """Points drawn together: their enclosing contexts, the sample order of the first, their rows."""

    __slots__ = ("first", "parents", "rows")

    def __init__(self, parents: list[int], first: int, rows: list[tuple[Any, ...]]) -> None:
        self.parents = parents
        self.first = first
        self.rows = rows


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
        # Rows are only built when something reads them.
        self.needs_rows = bool(method.hooks or method.aggregation or method.condition is not None)
        self._parent = -1
        self._points: Iterator[tuple[Any, ...]] | None = None
        self._order = 0

    def _draw(self, n: int) -> _Draw:
        """Up to ``n`` next points, walking the sampling lazily, parent after parent."""
        parents: list[int] = []
        rows: list[tuple[Any, ...]] = []
        first = self._order
        keep = self.parent_keep
        while len(rows) < n:
            if self._points is None:
                if self._parent + 1 >= len(self.parents.rows):
                    break
                self._parent += 1
                self._points = iter(self.method.points())
            p, want = self._parent, n - len(rows)
            values = list(itertools.islice(self._points, want))
            parent = self.parents.rows[p]
            if not parent and keep is None:
                rows.extend(values)  # the top level: the points are the rows
            else:
                rows.extend(_join(parent, v, keep) for v in values)
            parents.extend([p] * len(values))
            self.pending[p] += len(values)
            if len(values) < want:
                self._points = None
                self._drawn(p)
        self._order += len(rows)
        return _Draw(parents, first, rows)

    def _drawn(self, parent: int) -> None:
        self.drawn[parent] = True
        if self.pending[parent] == 0:
            self._emit(parent)

    async def run(self) -> None:
        in_flight = asyncio.Semaphore(BATCHES_IN_FLIGHT)
        async with asyncio.TaskGroup() as group:
            while True:
                await in_flight.acquire()
                draw = self._draw(self.evaluator.next_batch_size(self.method))
                if not draw.rows:
                    in_flight.release()
                    break
                group.create_task(self._batch(draw, in_flight))
                await asyncio.sleep(0)  # let the batch go out before the next one is drawn
        for parent, drawn in enumerate(self.drawn):
            if not drawn:
                self._drawn(parent)

    async def _batch(self, draw: _Draw, slot: asyncio.Semaphore) -> None:
        inner = Batch(self.inner_names, draw.rows)

        def done(indexes: list[int], out: Batch) -> None:
            self._results(draw, indexes, out)

        try:
            await self.evaluator.stream(self.method.evaluation, inner, done)
        finally:
            slot.release()

    def _results(self, draw: _Draw, indexes: list[int], out: Batch) -> None:
        if self.needs_rows:
            self._use_rows(draw, indexes, out)
        pending, parents = self.pending, draw.parents
        finished = {parents[i] for i in indexes} if len(self.pending) > 1 else {0}
        if len(pending) == 1:
            pending[0] -= len(indexes)
        else:
            for i in indexes:
                pending[parents[i]] -= 1
        for parent in finished:
            if pending[parent] == 0 and self.drawn[parent]:
                self._emit(parent)

    def _use_rows(self, draw: _Draw, indexes: list[int], out: Batch) -> None:
        """Hook the rows, or keep their values for the aggregation."""
        method = self.method
        names, keep = _merge(self.inner_names, out.names)
        inner = draw.rows
        if keep is None:
            rows = [inner[i] + row for i, row in zip(indexes, out.rows)]
        else:
            rows = [_join(inner[i], row, keep) for i, row in zip(indexes, out.rows)]
        if method.condition is not None:
            kept = [j for j, row in enumerate(rows) if method.keeps(dict(zip(names, row)))]
            rows = [rows[j] for j in kept]
            indexes = [indexes[j] for j in kept]
        if not method.aggregation:
            self.evaluator.hook(method, method.hooks, Batch(names, rows))
            return
        columns = [names.index(a.source.name) for a in method.aggregation]
        for i, row in zip(indexes, rows):
            order = draw.first + i
            for target, column in zip(self.aggregated[draw.parents[i]], columns):
                target.append((order, row[column]))

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
