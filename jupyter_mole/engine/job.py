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
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import psutil

__all__ = [
    "JobCancelled",
    "JobContext",
    "children_since",
    "kill_process_group",
    "kill_process_trees",
    "process_clock",
    "thread_children",
]


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


def thread_children(native_id: int) -> list[psutil.Process] | None:
    """The processes that the thread ``native_id`` of this process started, or None if unknown.

    Linux lists each thread's children in ``/proc/self/task/<tid>/children``.
    It is how a job's own processes (``subprocess.run`` in a PythonTask, a
    ``multiprocessing`` pool) are told from the worker's, which Dask started
    from other threads, without a scan of every process at each job's start.
    None where the file does not exist (another system, or a kernel built
    without it).
    """
    try:
        with open(f"/proc/self/task/{native_id}/children") as f:
            pids = f.read().split()
    except OSError:
        return None
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found.append(psutil.Process(int(pid)))
    return found


_BOOT_CLOCK = getattr(time, "CLOCK_BOOTTIME", None)


def process_clock() -> float:
    """A cheap reading of the clock that psutil dates processes with, for :func:`children_since`.

    On Linux psutil dates a process as boot time (whole seconds) plus its start
    in clock ticks since boot, so comparing it with ``time.time()`` can be off
    by a second; the boot clock puts both on the same footing. Elsewhere
    process start times are wall-clock times.
    """
    return time.clock_gettime(_BOOT_CLOCK) if _BOOT_CLOCK is not None else time.time()


def children_since(since: float) -> list[psutil.Process]:
    """This process's children started at or after ``since``, a :func:`process_clock` reading."""
    if _BOOT_CLOCK is not None:
        since += psutil.boot_time() - 0.011  # the start is floored to a tick of 10 ms
    found = []
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if child.create_time() >= since:
                found.append(child)
    return found


def kill_process_trees(processes: Iterable[psutil.Process], grace: float = 0.5) -> None:
    """SIGTERM these processes and all their descendants, SIGKILL what is left after ``grace``.

    The descendants are listed before anything is killed: once a parent dies
    its children go to init and can no longer be found from here.
    """
    every: list[psutil.Process] = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            every.extend(process.children(recursive=True))
        every.append(process)
    if not every:
        return
    for process in every:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    timer = threading.Timer(grace, _kill_processes, args=(every,))
    timer.daemon = True
    timer.start()


def _kill_processes(processes: list[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if process.is_running():
                process.kill()


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
