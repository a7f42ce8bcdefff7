"""One execution of a workflow: it runs in the background and can be watched and cancelled.

Everything a client polls for is here and safe to read from any thread: the
state, the per-task and per-environment counters, the error log (whole, or
"since my last read" per reader), and the output from an offset. Cancelling
stops running jobs for real and keeps the files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .batch import Batch
from .context import ExecutionContext
from .dsl.environments import Environment, LocalEnvironment
from .errors import JobError, MoleError
from .evaluation import Evaluator
from .state import ErrorRecord, Snapshot, State

if TYPE_CHECKING:
    from .dsl.puzzle import Puzzle
    from .environments.runtime import EnvironmentRuntime

__all__ = ["Execution"]

logger = logging.getLogger(__name__)


def _first_error(error: BaseException) -> BaseException:
    """The error to report out of an exception group: a MoleError first, else the first leaf."""
    if isinstance(error, BaseExceptionGroup):
        leaves = list(_leaves(error))
        for leaf in leaves:
            if isinstance(leaf, MoleError):
                return leaf
        return leaves[0] if leaves else error
    return error


def _leaves(group: BaseExceptionGroup) -> Any:
    for e in group.exceptions:
        if isinstance(e, BaseExceptionGroup):
            yield from _leaves(e)
        else:
            yield e


class Execution:
    """A workflow running (or run) on the engine."""

    def __init__(
        self,
        context: ExecutionContext,
        workflow: Puzzle,
        make_runtime: Callable[[Environment, ExecutionContext], EnvironmentRuntime],
        script: str | None = None,
    ) -> None:
        self.context = context
        self.id = context.id
        self.workflow = workflow
        self.script = script
        self._make_runtime = make_runtime
        self._runtimes: dict[int, EnvironmentRuntime] = {}
        self._default_environment = LocalEnvironment(name="local")
        self.state = State.RUNNING
        self.error: str | None = None
        self.stack_trace: str | None = None
        self.failed_task: str | None = None
        self.submitted = time.time()
        self.started: float | None = None
        self.ended: float | None = None
        self._done = threading.Event()
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cancel_requested = False
        self._callbacks: list[Callable[[Execution], None]] = []

    # -- reading ----------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        capsules, environments = self.context.progress.copy()
        return Snapshot(
            id=self.id,
            state=self.state,
            capsules=capsules,
            environments=environments,
            error=self.error,
            stack_trace=self.stack_trace,
            started=self.started,
            ended=self.ended,
        )

    def output(self, offset: int = 0, limit: int | None = None) -> tuple[str, int]:
        """The output text from byte ``offset``, and the offset to ask from next time."""
        return self.context.output.read(offset, limit)

    def errors(self) -> list[ErrorRecord]:
        return self.context.errors.all()

    def errors_since_last_read(self, reader: str) -> list[ErrorRecord]:
        return self.context.errors.since_last_read(reader)

    def add_done_callback(self, callback: Callable[[Execution], None]) -> None:
        """Call ``callback(execution)`` when it ends (before ``wait`` returns), from the engine's loop."""
        self._callbacks.append(callback)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> State:
        """Block until the execution ends (or ``timeout`` passes); the state then."""
        self._done.wait(timeout)
        return self.state

    # -- control ----------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        asyncio.run_coroutine_threadsafe(self._begin(), loop).result()

    async def _begin(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def cancel(self) -> None:
        """Stop the execution: running jobs are killed, files and logs stay (state ``cancelled``)."""
        if self.done or self._loop is None:
            return
        self._cancel_requested = True

        def _cancel() -> None:
            if self._task is not None:
                self._task.cancel()

        self._loop.call_soon_threadsafe(_cancel)

    def _runtime(self, environment: Environment | None) -> EnvironmentRuntime:
        environment = environment or self._default_environment
        runtime = self._runtimes.get(id(environment))
        if runtime is None:
            runtime = self._runtimes[id(environment)] = self._make_runtime(
                environment, self.context
            )
        return runtime

    async def _run(self) -> None:
        self.started = time.time()
        evaluator = Evaluator(self.context, self._runtime)
        try:
            await evaluator.run(self.workflow, Batch((), [()]))
            self._end(State.FINISHED)
        except asyncio.CancelledError:
            self._end(State.CANCELLED, "the execution was cancelled")
        except BaseException as raised:
            error = _first_error(raised)
            if self._cancel_requested and isinstance(error, asyncio.CancelledError):
                self._end(State.CANCELLED, "the execution was cancelled")
            elif isinstance(error, MoleError):
                if isinstance(error, JobError):
                    self.failed_task = error.task
                self._end(State.FAILED, error.message, error.stack_trace)
            else:
                self._end(
                    State.FAILED,
                    f"the engine failed: {type(error).__name__}: {error}",
                    "".join(traceback.format_exception(error)),
                )
        finally:
            try:
                evaluator.close()
                await self._close_runtimes()
            finally:
                self.context.output.close()
                shutil.rmtree(self.context.scratch_directory, ignore_errors=True)
                for callback in self._callbacks:
                    try:
                        callback(self)
                    except Exception:
                        logger.exception("a callback at the end of execution %s failed", self.id)
                self._done.set()

    async def _close_runtimes(self) -> None:
        """Close the clusters this execution started (batch jobs, SSH workers), even if cancelled again."""
        closing = asyncio.ensure_future(
            asyncio.gather(*(r.close() for r in self._runtimes.values()), return_exceptions=True)
        )
        while not closing.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(closing)
        for outcome in closing.result():
            if isinstance(outcome, BaseException):
                logger.warning(
                    "closing an environment of execution %s failed: %s", self.id, outcome
                )

    def _end(self, state: State, error: str | None = None, stack_trace: str | None = None) -> None:
        self.ended = time.time()
        if state is not State.FINISHED:
            self.context.progress.settle()
        self.error = error if state is not State.FINISHED else None
        self.stack_trace = stack_trace
        self.state = state
