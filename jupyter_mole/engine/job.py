"""What a running job may know about where it runs.

A task's ``process`` gets a :class:`JobContext`: the execution's work directory
(where resources come from), a scratch folder for per-job folders, and the hooks
that let a job's child processes be killed when the execution is cancelled. It
holds no Dask object, so tasks run the same inside and outside a worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["JobCancelled", "JobContext", "kill_process_group"]


class JobCancelled(BaseException):
    """Raised inside a job whose execution was cancelled.

    A BaseException so that a task's own ``except Exception`` cannot swallow it.
    """


def kill_process_group(pgid: int, grace: float = 0.5) -> None:
    """SIGTERM a process group, then SIGKILL whatever is left after ``grace`` seconds."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    timer = threading.Timer(grace, _kill_hard, args=(pgid,))
    timer.daemon = True
    timer.start()


def _kill_hard(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@dataclasses.dataclass
class JobContext:
    """Where a job runs and how to stop it; one per job."""

    work_directory: Path
    scratch_directory: Path
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
    process_groups: set[int] = dataclasses.field(default_factory=set)
    _guard: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)
    _starting: int = 0

    def new_job_directory(self) -> Path:
        """A fresh, empty folder for one job (SystemExecTask runs its commands in it)."""
        path = self.scratch_directory / "jobs" / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def output_file_directory(self) -> Path:
        """A folder that outlives the job, for the files it outputs."""
        path = self.scratch_directory / "files" / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path

    def watch(self, process: subprocess.Popen) -> None:
        """Kill this process's group if the job is cancelled (it must be a session leader)."""
        self.process_groups.add(process.pid)
        if self.cancelled.is_set():
            self.kill_processes()

    def unwatch(self, process: subprocess.Popen) -> None:
        self.process_groups.discard(process.pid)

    def kill_processes(self) -> None:
        for pgid in list(self.process_groups):
            kill_process_group(pgid)

    @contextlib.contextmanager
    def starting_process(self) -> Iterator[None]:
        """Hold off the cancelling exception while a child process starts and is watched.

        An exception raised into the job's thread between the fork and
        :meth:`watch` would leave the child running unseen. A cancel that comes
        meanwhile only sets :attr:`cancelled` (and ``watch`` then kills the
        child), so the caller must check it after the block.
        """
        with self._guard:
            self._starting += 1
        try:
            yield
        finally:
            with self._guard:
                self._starting -= 1

    def cancel(self, thread_id: int | None = None) -> None:
        """Stop the job: kill its processes and, given the thread that runs it, interrupt it.

        The interruption is :class:`JobCancelled` raised in that thread, the
        only way to stop a task's pure-Python loop; it is skipped while the job
        is starting a process (see :meth:`starting_process`).
        """
        with self._guard:
            self.cancelled.set()
            self.kill_processes()
            if thread_id is not None and not self._starting:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(thread_id), ctypes.py_object(JobCancelled)
                )
