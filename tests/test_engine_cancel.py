"""Cancelling jobs that the cancelling exception cannot reach, on the engine's real LocalCluster.

A PythonTask blocked in a C call (``time.sleep``, a wait on a child process)
never sees the exception that cancels it; the engine must still end the
execution promptly, kill what the job started, and give the worker back.
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil

from jupyter_mole.engine import Engine, State

from .test_execution import run, start

# Both workers of the session's engine must run a job at the same time for this
# to finish: a worker still held by a cancelled job makes it fail.
BOTH_WORKERS = """
import time
x = Val(int)

@PythonTask(inputs=[x])
def meet(x):
    (work_directory / f"here-{x}").touch()
    deadline = time.time() + 60
    while not all((work_directory / f"here-{i}").exists() for i in (1, 2)):
        if time.time() > deadline:
            raise RuntimeError("the other job never ran beside this one")
        time.sleep(0.05)

DirectSampling(evaluation=meet.by(1), sampling=x.in_([1, 2]))
"""


def _wait_for(paths: list[Path], timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not all(p.exists() for p in paths):
        assert time.time() < deadline, f"never appeared: {[p.name for p in paths]}"
        time.sleep(0.05)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _sleepers() -> list[psutil.Process]:
    """The ``sleep 600`` processes under this test process (the workers are its children)."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if process.cmdline() == ["sleep", "600"]:
                found.append(process)
        except psutil.Error:
            pass
    return found


def _assert_both_workers_free(engine: Engine, work: Path) -> None:
    again_dir = work / "again"
    again_dir.mkdir()
    again = run(engine, BOTH_WORKERS, again_dir, timeout=120)
    assert again.state is State.FINISHED, again.error


def test_cancel_stops_a_python_task_blocked_in_time_sleep(engine: Engine, work: Path) -> None:
    execution = start(
        engine,
        """
        import time
        x = Val(int)

        @PythonTask(inputs=[x])
        def stuck(x):
            (work_directory / f"started-{x}").touch()
            time.sleep(600)

        DirectSampling(evaluation=stuck.by(1), sampling=x.in_([1, 2]))
        """,
        work,
    )
    _wait_for([work / "started-1", work / "started-2"])
    cancelled_at = time.time()
    execution.cancel()
    assert execution.wait(30) is State.CANCELLED
    assert time.time() - cancelled_at < 15, "the cancel waited for the sleeping jobs"
    snapshot = execution.snapshot()
    assert snapshot.running == snapshot.ready == 0
    restarts = [e for e in execution.errors() if "were restarted" in e.message]
    assert restarts, "the stuck workers were not restarted"
    _assert_both_workers_free(engine, work)


def test_cancel_kills_a_child_process_a_python_task_waits_for(engine: Engine, work: Path) -> None:
    before = {p.pid for p in _sleepers()}
    execution = start(
        engine,
        """
        import subprocess
        x = Val(int)

        @PythonTask(inputs=[x])
        def waits(x):
            (work_directory / f"started-{x}").touch()
            subprocess.run(["sleep", "600"])

        DirectSampling(evaluation=waits.by(1), sampling=x.in_([1, 2]))
        """,
        work,
    )
    _wait_for([work / "started-1", work / "started-2"])
    deadline = time.time() + 30
    while len(children := [p for p in _sleepers() if p.pid not in before]) < 2:
        assert time.time() < deadline, "the jobs' sleep processes never showed up"
        time.sleep(0.05)
    execution.cancel()
    assert execution.wait(30) is State.CANCELLED
    deadline = time.time() + 10
    while any(_alive(p) for p in children):
        assert time.time() < deadline, "a `sleep 600` started by a job outlived the cancel"
        time.sleep(0.05)
    _assert_both_workers_free(engine, work)


def test_a_failed_execution_frees_the_worker_of_its_other_stuck_job(
    engine: Engine, work: Path
) -> None:
    execution = start(
        engine,
        """
        import time
        x = Val(int)

        @PythonTask(inputs=[x])
        def job(x):
            if x == 1:
                (work_directory / "sleeping").touch()
                time.sleep(600)
            deadline = time.time() + 60
            while not (work_directory / "sleeping").exists() and time.time() < deadline:
                time.sleep(0.05)
            raise ValueError("broken model")

        DirectSampling(evaluation=job.by(1), sampling=x.in_([1, 2]))
        """,
        work,
    )
    assert execution.wait(60) is State.FAILED
    assert "broken model" in (execution.error or "")
    _assert_both_workers_free(engine, work)
