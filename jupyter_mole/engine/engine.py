"""The embedded engine: a background event loop, the shared Dask cluster, the executions.

Executions run as asyncio tasks on one loop in a thread of its own, so the
caller (a command line, a REST server on its own loop, a test) is never
blocked by the engine and talks to it through thread-safe calls.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from .context import ExecutionContext
from .dsl.batch_environments import BatchEnvironment
from .dsl.environments import DaskEnvironment, Environment, LocalEnvironment, SSHEnvironment
from .dsl.puzzle import Puzzle, as_puzzle
from .environments import EnvironmentRuntime, LocalClusterManager
from .environments.batch import BatchClusterManager
from .environments.remote import DaskSchedulerManager, SSHClusterManager
from .errors import WorkflowError
from .execution import Execution
from .output import OutputLog
from .script import load_script

__all__ = ["Engine"]

_SUPPORTED = (LocalEnvironment, DaskEnvironment, SSHEnvironment, BatchEnvironment)


class Engine:
    """Runs workflows; one per process is the intended use (it owns a LocalCluster)."""

    def __init__(
        self,
        state_directory: str | Path,
        n_workers: int | None = None,
        *,
        dask_log_level: int = logging.ERROR,
    ) -> None:
        """``dask_log_level``: what Dask itself may log, in this process and its workers.

        The engine reports what a user must know (a lost job, a failed batch
        job) in the execution's errors; a terminal front end passes a level
        above CRITICAL so that Dask's own lines do not repeat it.
        """
        self.state_directory = Path(state_directory)
        self.state_directory.mkdir(parents=True, exist_ok=True)
        self.cluster = LocalClusterManager(
            self.state_directory / "dask", n_workers, log_level=dask_log_level
        )
        self.executions: dict[str, Execution] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="mole-engine", daemon=True
        )
        self._thread.start()
        self._closed = False

    def _runtime(self, environment: Environment, context: ExecutionContext) -> EnvironmentRuntime:
        """The runtime of ``environment`` for one execution.

        Local environments share the engine's LocalCluster; every other kind
        gets a cluster (or client) of the execution's own, closed when it ends.
        """
        if isinstance(environment, LocalEnvironment):
            return EnvironmentRuntime(environment, self.cluster.connect, context, environment.n)
        manager: BatchClusterManager | DaskSchedulerManager | SSHClusterManager
        if isinstance(environment, BatchEnvironment):
            directory = self.state_directory / "batch" / context.id / environment.name
            manager = BatchClusterManager(environment, directory, context)
            slots: int | None = environment.slots
        elif isinstance(environment, DaskEnvironment):
            manager = DaskSchedulerManager(environment, context)
            slots = environment.slots
        elif isinstance(environment, SSHEnvironment):
            manager = SSHClusterManager(environment, context)
            slots = environment.slots
        else:
            raise WorkflowError(f"the embedded engine cannot run on {type(environment).__name__}")
        return EnvironmentRuntime(environment, manager.connect, context, slots, manager.close)

    def warm_up(self) -> None:
        """Start the shared cluster now rather than at the first job."""
        asyncio.run_coroutine_threadsafe(self.cluster.connect(), self._loop).result()

    def start(
        self,
        workflow: Puzzle,
        work_directory: str | Path,
        *,
        execution_id: str | None = None,
        script: str | None = None,
        on_end: Callable[[Execution], None] | None = None,
    ) -> Execution:
        """Check ``workflow`` and start running it; raises WorkflowError if it cannot run."""
        if self._closed:
            raise RuntimeError("this engine is closed")
        workflow = as_puzzle(workflow)
        workflow.provides({})
        for capsule in workflow.capsules():
            if capsule.environment is not None:
                self._runtime_check(capsule.environment)
        execution_id = execution_id or str(uuid.uuid4())
        run_directory = self.state_directory / "executions" / execution_id
        context = ExecutionContext(
            id=execution_id,
            work_directory=Path(work_directory).resolve(),
            scratch_directory=run_directory / "scratch",
            output=OutputLog(run_directory / "output.txt"),
        )
        execution = Execution(context, workflow, self._runtime, script)
        if on_end is not None:
            execution.add_done_callback(on_end)
        self.executions[execution_id] = execution
        execution.start(self._loop)
        return execution

    def _runtime_check(self, environment: Environment) -> None:
        if not isinstance(environment, _SUPPORTED):
            raise WorkflowError(
                f"the embedded engine cannot run on {type(environment).__name__}: use one of "
                + ", ".join(t.__name__ for t in _SUPPORTED)
            )

    def run_script(self, script: str | Path, work_directory: str | Path | None = None) -> Execution:
        """Load ``script`` (its folder is the work directory unless given) and start it."""
        script = Path(script)
        work = Path(work_directory) if work_directory is not None else script.parent
        loaded = load_script(script, work)
        return self.start(loaded.workflow, work, script=str(script))

    def close(self) -> None:
        """Cancel what runs, wait for it, stop the cluster and the loop."""
        if self._closed:
            return
        self._closed = True
        for execution in list(self.executions.values()):
            execution.cancel()
        for execution in list(self.executions.values()):
            execution.wait(30)
        asyncio.run_coroutine_threadsafe(self.cluster.close(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
