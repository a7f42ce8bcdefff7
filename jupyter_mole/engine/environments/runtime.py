"""Running a capsule's jobs on an environment: grouping, counting, retrying, resubmitting.

Every environment is a Dask cluster underneath; what is the same for all of
them lives here. Jobs are grouped into chunks sized from the measured time per
job (about a fifth of a second of work per chunk, one job while nothing is
measured yet), unless the capsule says ``.by(n)``. At most ``slots`` chunks of
an execution are on an environment at once, which is how ``LocalEnvironment(n)``
caps its concurrency without a scheduler of our own.

Jobs lost with their worker are resubmitted up to the environment's
``max_resubmissions``; only the chunks that were running on the worker are
charged for its death, not those queued behind them
(``ClusterConnection.judge_loss``). Cancelled chunks that do not stop get
their worker restarted (``ClusterConnection.stop_chunks``).

What jobs print reaches the execution's output while their chunk runs, line
by line (``ClusterConnection.watch_output``), and the rest with its result.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import pickle
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import cloudpickle
from distributed.scheduler import KilledWorker

from ..batch import Batch
from ..errors import JobError
from ..state import ErrorLevel
from .worker import ChunkResult, run_chunk

if TYPE_CHECKING:
    from ..context import ExecutionContext
    from ..dsl.environments import Environment
    from ..dsl.puzzle import Capsule
    from .cluster import ClusterConnection

__all__ = ["ChunkSizer", "EnvironmentRuntime"]

STOP_TIMEOUT = 20.0
"""Seconds a cancel waits at most for the workers of stuck jobs to be restarted."""


class ChunkSizer:
    """How many jobs go into the next chunk of one capsule, and how long it may run.

    Before any job of the capsule has been timed, chunks are sized to share
    the batch among the slots, and the worker stops a chunk once its time
    budget is spent, handing back the jobs it did not reach: a slow model
    then costs one job per slot of waiting, never thousands, while a fast one
    does not pay a round trip to a worker for a probe. Once timed, chunks
    hold about ``target_seconds`` of work. ``.by(n)`` fixes the size and lifts
    the budget.
    """

    target_seconds = 0.2
    budget_seconds = 0.5
    first_largest = 4096
    largest = 50_000

    def __init__(self, fixed: int | None = None) -> None:
        self.fixed = fixed
        self._seconds = 0.0
        self._jobs = 0.0

    @property
    def seconds_per_job(self) -> float | None:
        return self._seconds / self._jobs if self._jobs else None

    def next_size(self, remaining: int, batch: int, slots: int) -> tuple[int, float | None]:
        """The next chunk's size and time budget: ``remaining`` jobs left of a ``batch``.

        Balancing uses the whole batch, not what remains of it: halving the
        remainder would end every batch with a tail of ever smaller chunks,
        each paying a full round trip.
        """
        if self.fixed:
            return min(self.fixed, remaining), None
        share = math.ceil(batch / slots)
        per_job = self.seconds_per_job
        if per_job is None:
            size = min(share, self.first_largest)
        else:
            size = min(int(self.target_seconds / max(per_job, 1e-7)), self.largest, share)
        return max(1, min(size, remaining)), self.budget_seconds

    def observe(self, jobs: int, seconds: float) -> None:
        """Fold in a chunk's timing; recent and larger chunks weigh most."""
        if jobs <= 0:
            return
        self._seconds = 0.5 * self._seconds + seconds
        self._jobs = 0.5 * self._jobs + jobs


class _Chunk:
    __slots__ = ("finished", "indexes", "key", "started")

    def __init__(self, key: str, indexes: list[int]) -> None:
        self.key = key
        self.indexes = indexes
        self.started = False
        self.finished = False


class EnvironmentRuntime:
    """One environment as one execution uses it."""

    def __init__(
        self,
        environment: Environment,
        connect: Callable[[], Awaitable[ClusterConnection]],
        context: ExecutionContext,
        slots: int | None = None,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.environment = environment
        self.name = environment.name
        self._connect = connect
        self._close = close
        self.context = context
        self._slots = slots
        self._semaphore: asyncio.Semaphore | None = None
        self._blobs: dict[int, bytes] = {}
        self._sizers: dict[int, ChunkSizer] = {}
        self._keys = itertools.count()
        self.counts = context.progress.environment(self.name)

    async def _ready(self) -> ClusterConnection:
        connection = await self._connect()
        if self._semaphore is None:
            self._slots = self._slots or connection.slots
            # When the cap is the cluster's own size, Dask enforces it; one more chunk per
            # slot then waits on the scheduler, so that a worker finishing a chunk starts the
            # next at once instead of after a round trip to us.
            queued = self._slots if self._slots >= connection.slots else 0
            self._semaphore = asyncio.Semaphore(self._slots + queued)
        return connection

    def _blob(self, capsule: Capsule) -> bytes:
        blob = self._blobs.get(id(capsule.task))
        if blob is None:
            blob = self._blobs[id(capsule.task)] = cloudpickle.dumps(capsule.task)
        return blob

    async def run(
        self, capsule: Capsule, batch: Batch, sink: Callable[[list[int], Batch], None]
    ) -> None:
        """Run ``capsule``'s task on every row of ``batch``, each chunk's results to ``sink``."""
        connection = await self._ready()
        task = capsule.task
        wanted = {v.name for v in task.inputs}
        keep = [i for i, name in enumerate(batch.names) if name in wanted]
        names = tuple(batch.names[i] for i in keep)
        if len(keep) == len(batch.names):
            rows = batch.rows  # the common case: the rows hold exactly the task's inputs
        else:
            rows = [tuple(row[i] for i in keep) for row in batch.rows]
        sizer = self._sizers.setdefault(id(capsule), ChunkSizer(capsule.grouping))
        counts = self.context.progress.capsule(capsule.name)
        counts.ready += len(rows)
        run = _CapsuleRun(self, connection, capsule, names, rows, sizer, sink)
        work = asyncio.ensure_future(run.all())
        try:
            await asyncio.wait({work, connection.broken}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                work.cancel()
                connection.broken.result()  # raises why the cluster cannot run jobs
            work.result()
        finally:
            if not work.done():
                work.cancel()
            await asyncio.gather(work, return_exceptions=True)
            await run.cancel_outstanding()

    async def close(self) -> None:
        """Release what this execution holds on the environment (its own cluster, if any)."""
        if self._close is not None:
            await self._close()


class _CapsuleRun:
    """The jobs of one batch of one capsule, from submission to the last result."""

    def __init__(
        self,
        runtime: EnvironmentRuntime,
        connection: ClusterConnection,
        capsule: Capsule,
        names: tuple[str, ...],
        rows: list[tuple[Any, ...]],
        sizer: ChunkSizer,
        sink: Callable[[list[int], Batch], None],
    ) -> None:
        self.runtime = runtime
        self.sink = sink
        self.out_names = tuple(v.name for v in capsule.task.outputs)
        self.connection = connection
        self.capsule = capsule
        self.names = names
        self.rows = rows
        self.sizer = sizer
        self.queue: deque[int] = deque(range(len(rows)))
        self.retries: dict[int, int] = {}
        self.losses: dict[int, int] = {}
        self.tasks: set[asyncio.Task] = set()
        self.futures: dict[str, Any] = {}
        self.counts = runtime.context.progress.capsule(capsule.name)
        self.env = runtime.counts

    async def all(self) -> None:
        semaphore = self.runtime._semaphore
        assert semaphore is not None
        while self.queue or self.tasks:
            for task in [t for t in self.tasks if t.done()]:
                self.tasks.discard(task)
                task.result()
            if self.queue:
                await semaphore.acquire()
                if not self.queue:
                    semaphore.release()
                    continue
                size, budget = self.sizer.next_size(
                    len(self.queue), len(self.rows), self.runtime._slots or 1
                )
                indexes = [self.queue.popleft() for _ in range(size)]
                self.tasks.add(asyncio.ensure_future(self._chunk(indexes, budget)))
            elif self.tasks:
                done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    self.tasks.discard(task)
                    task.result()

    async def cancel_outstanding(self) -> None:
        """Cancel the chunks still out, and make sure none goes on running on a worker.

        A chunk blocked where the cancelling exception cannot reach it gets its
        worker restarted (``ClusterConnection.stop_chunks``), so that neither
        the worker nor the processes the job started outlive the cancel.
        """
        for task in self.tasks:
            task.cancel()
        futures = [f for f in self.futures.values() if not f.done()]
        if futures:
            with contextlib.suppress(Exception):
                await self.connection.client.cancel(futures, force=True)
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if futures:
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    restarted = await self.connection.stop_chunks([f.key for f in futures])
            except Exception as error:  # a closing or unreachable cluster: its workers go anyway
                restarted = []
                self.runtime.context.report(
                    self.runtime.name,
                    ErrorLevel.FINE,
                    f"could not check that the cancelled jobs of task {self.capsule.name} "
                    f"stopped: {type(error).__name__}: {error}",
                )
            if restarted:
                self.runtime.context.report(
                    self.runtime.name,
                    ErrorLevel.FINE,
                    f"jobs of task {self.capsule.name} did not stop when cancelled (blocked "
                    f"outside Python); their worker(s) were restarted: {', '.join(restarted)}",
                )

    def _started(self, chunk: _Chunk) -> None:
        if chunk.started or chunk.finished:
            return
        chunk.started = True
        k = len(chunk.indexes)
        self.counts.ready -= k
        self.counts.running += k
        self.env.submitted -= 1
        self.env.running += 1

    def _finished(self, chunk: _Chunk) -> None:
        chunk.finished = True
        k = len(chunk.indexes)
        if chunk.started:
            self.counts.running -= k
            self.env.running -= 1
        else:
            self.counts.ready -= k
            self.env.submitted -= 1

    def _requeue(self, indexes: list[int]) -> None:
        self.queue.extend(indexes)
        self.counts.ready += len(indexes)

    async def _chunk(self, indexes: list[int], budget: float | None) -> None:
        runtime = self.runtime
        ctx = runtime.context
        key = f"mole-{ctx.id}-{self.capsule.name}-{next(runtime._keys)}"
        chunk = _Chunk(key, indexes)
        self.env.submitted += 1
        self.connection.watch_start(key, lambda worker: self._started(chunk))
        self.connection.watch_output(key, ctx.output.write)
        try:
            future = self.connection.client.submit(
                run_chunk,
                runtime._blob(self.capsule),
                pickle.dumps((self.names, [self.rows[i] for i in indexes]), protocol=5),
                budget,
                str(ctx.work_directory),
                str(ctx.scratch_directory),
                key=key,
                pure=False,
            )
            self.futures[key] = future
            try:
                result: ChunkResult = await future
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._finished(chunk)
                dead = _dead_worker(e)
                if await self.connection.judge_loss(dead, chunk.started):
                    self._lost(indexes, _loss_reason(e, dead))
                else:  # queued on a worker that died under another chunk: not this one's fault
                    self._requeue(indexes)
                return
            self._finished(chunk)
            self._collect(indexes, result)
        finally:
            self.futures.pop(key, None)
            self.connection.unwatch_start(key)
            self.connection.unwatch_output(key)
            assert runtime._semaphore is not None
            runtime._semaphore.release()

    def _collect(self, indexes: list[int], result: ChunkResult) -> None:
        done = len(result.outputs)
        self.counts.completed += done
        self.sizer.observe(done + (result.failure is not None), result.seconds)
        # What the chunk printed before its last STREAM_INTERVAL tick is already in the
        # output (ClusterConnection.watch_output); this is the rest.
        self.runtime.context.output.write(result.printed)
        if done:
            self.sink(indexes[:done], Batch(self.out_names, result.outputs))
        if result.cancelled and result.failure is None:
            self._lost(indexes[done:], "the job was stopped on its worker")
            return
        if result.failure is None:
            self.env.done += 1
            self._requeue(indexes[done:])  # what the chunk's time budget did not reach
            return
        self.env.failed += 1
        failure = result.failure
        failed = indexes[failure.index]
        self._requeue(indexes[failure.index + 1 :])
        attempts = self.retries.get(failed, 0) + 1
        self.retries[failed] = attempts
        name = self.capsule.name
        if not failure.user_error and attempts <= self.runtime.environment.retry:
            self.runtime.context.report(
                self.runtime.name,
                ErrorLevel.WARNING,
                f"a job of task {name} failed and is run again "
                f"({attempts}/{self.runtime.environment.retry}): {failure.message}",
                failure.stack_trace,
            )
            self._requeue([failed])
            return
        inputs = dict(zip(self.names, self.rows[failed]))
        self.runtime.context.report(
            self.runtime.name,
            ErrorLevel.SEVERE,
            f"task {name} failed: {failure.message}",
            failure.stack_trace,
        )
        raise JobError(
            f"task {name} failed on inputs {_show(inputs)}: {failure.message}",
            task=name,
            inputs=inputs,
            stack_trace=failure.stack_trace,
        )

    def _lost(self, indexes: list[int], reason: str) -> None:
        """Jobs whose worker died or dropped them: resubmitted, up to the environment's cap."""
        self.env.failed += 1
        environment = self.runtime.environment
        worst = max((self.losses.get(i, 0) for i in indexes), default=0) + 1
        for i in indexes:
            self.losses[i] = self.losses.get(i, 0) + 1
        name = self.capsule.name
        if worst > environment.max_resubmissions:
            message = (
                f"{len(indexes)} job(s) of task {name} were lost with their worker "
                f"{worst} times, more than max_resubmissions={environment.max_resubmissions}: {reason}"
            )
            self.runtime.context.report(self.runtime.name, ErrorLevel.SEVERE, message)
            raise JobError(message, task=name)
        self.runtime.context.report(
            self.runtime.name,
            ErrorLevel.WARNING,
            f"{len(indexes)} job(s) of task {name} were lost with their worker and are "
            f"resubmitted ({worst}/{environment.max_resubmissions}): {reason}",
        )
        self._requeue(indexes)


def _dead_worker(error: BaseException) -> str | None:
    """The worker whose death failed a chunk, if ``error`` says (Dask's ``KilledWorker``)."""
    if isinstance(error, KilledWorker):
        return getattr(error.last_worker, "address", None)
    return None


def _loss_reason(error: BaseException, worker: str | None) -> str:
    """Why jobs were lost, in a line: Dask's ``KilledWorker`` text is a paragraph of advice."""
    if isinstance(error, KilledWorker):
        return (
            f"worker {worker or '?'} died while it held them "
            "(a crash, a signal, or the system running out of memory)"
        )
    return f"{type(error).__name__}: {error}"


def _show(inputs: dict[str, Any], limit: int = 300) -> str:
    text = "{" + ", ".join(f"{k}={v!r}" for k, v in inputs.items()) + "}"
    return text if len(text) <= limit else text[: limit - 4] + "...}"
