"""One execution's cluster on a batch system (SLURM, PBS, ...), through dask-jobqueue.

dask-jobqueue submits batch jobs that each start a Dask worker, and scales
their number with the work; it does not watch the jobs once submitted. What a
modeller needs to know about them is added here:

- a submission the scheduler refuses (no ``sbatch``, an unknown partition) is
  reported SEVERE with the scheduler's own message, and counted;
- a job that leaves the queue without its worker ever connecting (the worker
  could not start) is reported SEVERE with the job's stderr, and counted;
- a job that leaves the queue while its worker ran (``scancel``, preemption,
  wall time) is reported WARNING and replaced; Dask reruns its work;
- after ``max_job_attempts`` counted failures the execution fails with the
  reason instead of submitting forever.

The cluster belongs to one execution: it starts with the first job and is
closed (every batch job cancelled) when the execution ends, however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
from distributed import Client
from distributed.core import Status
from distributed.diagnostics.plugin import SchedulerPlugin

from ..errors import EnvironmentFailure
from ..state import ErrorLevel
from .cluster import DASK_CONFIG, ClusterConnection
from .worker import MoleWorkerPlugin

if TYPE_CHECKING:
    from ..context import ExecutionContext
    from ..dsl.batch_environments import BatchEnvironment

__all__ = ["BatchClusterManager"]

logger = logging.getLogger(__name__)

# What a scheduler's status command prints for a job that is over.
_OVER = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "TIMEOUT",
    "C",  # PBS / Torque: completed
    "DONE",  # LSF
    "EXIT",
    "Terminated",  # OAR
    "Error",
}
_STATUS_COMMANDS = {
    "slurm": "squeue -h -o %T -j",
    "pbs": "qstat",
    "sge": "qstat -j",
    "lsf": "bjobs -noheader -o stat",
    "oar": "oarstat -s -j",
    "htcondor": "condor_q -af JobStatus",
}


class _Arrivals(SchedulerPlugin):
    """Remembers the name of every worker that ever connected, however briefly."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def add_worker(self, scheduler: Any, worker: str) -> None:
        state = scheduler.workers.get(worker)
        if state is not None:
            self.names.add(str(state.name))


def _command_error(error: BaseException, submit_command: str) -> str:
    """The part of a failed submission a person needs: the scheduler's stderr."""
    if isinstance(error, FileNotFoundError):
        command = submit_command.split()[0]
        return (
            f"`{command}` was not found on this machine's PATH: run the server where the "
            f"batch system's commands work (its login node), or add them to the PATH"
        )
    text = str(error)
    match = re.search(r"stderr:\n(.*)", text, re.S)
    if match and match.group(1).strip():
        return match.group(1).strip()
    return f"{type(error).__name__}: {text.strip()}"


class BatchClusterManager:
    """Starts, watches and closes one execution's dask-jobqueue cluster."""

    monitor_interval = 1.0

    def __init__(
        self, environment: BatchEnvironment, directory: Path, context: ExecutionContext
    ) -> None:
        self.environment = environment
        self.directory = directory
        self.context = context
        self.failures = 0
        self._connection: ClusterConnection | None = None
        self._cluster: Any = None
        self._monitor: asyncio.Task | None = None
        self._adaptive: Any = None
        self._lock = asyncio.Lock()
        self._arrived: set[str] = set()
        self._closing = False
        self._pending: set[asyncio.Future] = set()

    @property
    def logs(self) -> Path:
        shared = self.environment.shared_directory
        return Path(shared).expanduser() / self.context.id if shared else self.directory / "logs"

    async def connect(self) -> ClusterConnection:
        async with self._lock:
            if self._connection is None:
                self._connection = await self._start()
            return self._connection

    async def _start(self) -> ClusterConnection:
        dask_jobqueue = import_jobqueue()
        environment = self.environment
        cluster_class = getattr(dask_jobqueue, environment.jobqueue_class)
        self.logs.mkdir(parents=True, exist_ok=True)
        options = environment.jobqueue_options()
        options.setdefault("local_directory", str(self.directory / "workers"))
        with dask.config.set(DASK_CONFIG):
            cluster = await cluster_class(
                job_cls=_job_class(cluster_class.job_cls, self),
                log_directory=str(self.logs),
                scheduler_options={"dashboard_address": "127.0.0.1:0"},
                asynchronous=True,
                **options,
            )
            self._cluster = cluster
            cluster.scheduler.add_plugin(_Arrivals(self._arrived), name="mole-arrivals")
            self._adaptive = cluster.adapt(
                minimum=0, maximum=environment.max_jobs, interval="1s", wait_count=5
            )
            client = await Client(cluster, asynchronous=True)
        await client.register_plugin(MoleWorkerPlugin())
        connection = ClusterConnection(client, environment.slots)
        self._monitor = asyncio.ensure_future(self._watch())
        return connection

    # -- what the jobs say ---------------------------------------------------------
    def _report(self, level: ErrorLevel, message: str, details: str | None = None) -> None:
        self.context.report(self.environment.name, level, message, details)

    def job_submitted(self, job: Any) -> None:
        self._report(ErrorLevel.FINE, f"{self.environment.name}: batch job {job.job_id} submitted")

    def submission_failed(self, job: Any, error: BaseException) -> None:
        reason = _command_error(error, job.submit_command)
        self._count_failure(
            f"{self.environment.name}: the batch system refused a job: {reason}",
            f"{error}\n\njob script:\n{_script(job)}",
        )
        self._forget(job.name)

    def _count_failure(self, message: str, details: str) -> None:
        if self._closing:
            return
        self.failures += 1
        attempts = self.environment.max_job_attempts
        self._report(ErrorLevel.SEVERE, f"{message} (attempt {self.failures}/{attempts})", details)
        if self.failures >= attempts and self._connection is not None:
            if self._adaptive is not None:
                self._adaptive.stop()  # no more submissions
            self._connection.break_with(
                EnvironmentFailure(
                    self.environment.name,
                    f"environment {self.environment.name}: {attempts} batch job(s) failed, "
                    f"max_job_attempts={attempts}: {message}",
                    details,
                )
            )

    def _forget(self, name: str) -> None:
        """Drop a dead job from the cluster's plan so that adaptive scaling may replace it."""
        if self._cluster is not None and not self._closing:
            task = asyncio.ensure_future(self._cluster.scale_down([name]))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _watch(self) -> None:
        """Every second: which of our batch jobs have left the queue, and why."""
        command = _STATUS_COMMANDS.get(self.environment.kind)
        while not self._closing and command is not None:
            await asyncio.sleep(self.monitor_interval)
            cluster = self._cluster
            connected = {str(w.name) for w in cluster.scheduler.workers.values()}
            for name, job in list(cluster.workers.items()):
                job_id = getattr(job, "job_id", None)
                if not job_id or name in connected or name not in cluster.worker_spec:
                    continue
                try:
                    if await _in_queue(command, job_id):
                        continue
                except Exception as e:  # the status command itself failed: say so once a while
                    logger.debug("status of job %s: %s", job_id, e)
                    continue
                if self._closing:
                    return
                if name in self._arrived:
                    self._report(
                        ErrorLevel.WARNING,
                        f"{self.environment.name}: batch job {job_id} ended while its worker "
                        f"was running (cancelled, preempted or out of wall time); its work is "
                        f"resubmitted and the job replaced",
                    )
                else:
                    self._count_failure(
                        f"{self.environment.name}: batch job {job_id} ended before its worker "
                        f"started: {_tail(self.logs, job_id) or 'it left no error output'}",
                        f"job script:\n{_script(job)}",
                    )
                self._forget(name)

    async def close(self) -> None:
        """Cancel every batch job of the execution and stop its scheduler."""
        async with self._lock:
            self._closing = True
            if self._monitor is not None:
                self._monitor.cancel()
                with contextlib.suppress(BaseException):
                    await self._monitor
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    await self._connection.client.close()
            if self._cluster is not None:
                try:
                    await self._cluster.close()
                except Exception as e:
                    logger.warning("closing the %s cluster: %s", self.environment.name, e)
            self._connection = None
            self._cluster = None


def import_jobqueue() -> Any:
    """dask_jobqueue, imported without letting it take over Ctrl-C.

    Its ``runner`` module sets a SIGINT handler that exits the process when
    imported, which fails outside the main thread (the engine's loop runs in
    its own) and would replace the server's or the kernel's own handling in it.
    """
    module = sys.modules.get("dask_jobqueue")
    if module is not None:
        return module
    previous = signal.getsignal(signal.SIGINT)
    original = signal.signal
    if threading.current_thread() is not threading.main_thread():
        signal.signal = lambda signalnum, handler: previous  # type: ignore[assignment]
    try:
        import dask_jobqueue
    finally:
        signal.signal = original
        if threading.current_thread() is threading.main_thread() and previous is not None:
            signal.signal(signal.SIGINT, previous)
    return dask_jobqueue


def _job_class(base: type, manager: BatchClusterManager) -> type:
    """The cluster's job class, reporting refused submissions and closing cleanly."""

    class MoleJob(base):  # type: ignore[misc, valid-type]
        async def start(self) -> None:
            try:
                await super().start()
                manager.job_submitted(self)
            except Exception as error:
                # Raising would leave a job that never was in the cluster's plan forever,
                # and adaptive scaling would not replace it: report and drop it instead.
                manager.submission_failed(self, error)
                self.status = Status.running  # what the cluster awaits; closed when dropped

        async def _submit_job(self, script_filename: str) -> str:
            # Run from the log folder: some systems (Torque's qsub) write the job's
            # output where they were called, whatever the script asks.
            command = [*shlex.split(self.submit_command), script_filename]
            return await self._call(command, cwd=str(manager.logs))

        async def close(self) -> None:
            try:
                await super().close()
            finally:
                # dask-jobqueue 0.9 cancels the job but leaves its status running,
                # which makes the cluster's close fail an assertion.
                self.status = Status.closed

    MoleJob.__name__ = MoleJob.__qualname__ = f"Mole{base.__name__}"
    return MoleJob


async def _in_queue(command: str, job_id: str) -> bool:
    process = await asyncio.create_subprocess_exec(
        *shlex.split(command),
        job_id,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    words = out.decode(errors="replace").split()
    if process.returncode != 0 or not words:
        return False
    return not any(word in _OVER for word in words)


def _tail(logs: Path, job_id: str, limit: int = 2000) -> str:
    """The end of what the job wrote to its error files (their names hold its id)."""
    texts = []
    for path in sorted(logs.glob(f"*{job_id}*")):
        with contextlib.suppress(OSError):
            text = path.read_text(errors="replace").strip()
            if text:
                texts.append(text)
    text = "\n".join(texts)
    return text if len(text) <= limit else "..." + text[-limit:]


def _script(job: Any) -> str:
    try:
        return job.job_script()
    except Exception as e:
        return f"(the job script could not be shown: {e})"
