"""Failures, retries, lost workers and cancellation, on a real LocalCluster with real processes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from jupyter_mole.engine import Engine, ErrorLevel, State
from tests.test_execution import run, start


def test_a_raising_task_fails_the_execution_with_task_inputs_and_traceback(
    engine: Engine, work: Path
) -> None:
    execution = run(
        engine,
        """
        x, y = Val(int), Val(float)

        @PythonTask(inputs=[x], outputs=[y])
        def fragile(x):
            if x == 7:
                raise ValueError("x must not be seven")
            return 1.0 / (x + 1)

        DirectSampling(evaluation=fragile, sampling=x.in_(range(10)))
        """,
        work,
    )
    assert execution.state is State.FAILED
    assert "task fragile failed on inputs {x=7}" in execution.error
    assert "ValueError: x must not be seven" in execution.error
    assert 'raise ValueError("x must not be seven")' in execution.stack_trace
    assert f'File "{work / "test.oms"}", line 7, in fragile' in execution.stack_trace
    assert "jupyter_mole" not in execution.stack_trace  # only the modeller's frames
    assert execution.failed_task == "fragile"
    severe = [e for e in execution.errors() if e.level is ErrorLevel.SEVERE]
    assert severe and "x must not be seven" in severe[0].message
    assert execution.snapshot().environments[0].failed >= 1


def test_a_wrong_output_type_names_task_value_and_types(engine: Engine, work: Path) -> None:
    execution = run(
        engine,
        """
        x, y = Val(int), Val(float)
        DirectSampling(evaluation=PythonTask("y = 'text'", inputs=[x], outputs=[y], name="typed"),
                       sampling=x.in_([1]))
        """,
        work,
    )
    assert execution.state is State.FAILED
    assert execution.error == (
        "task typed failed on inputs {x=1}: output: y should be float, got str 'text' "
        "(test.oms, line 3)"
    )


def test_retry_runs_a_failed_job_again_and_logs_a_warning(engine: Engine, work: Path) -> None:
    execution = run(
        engine,
        """
        from pathlib import Path
        x, y = Val(int), Val(int)
        marks = work_directory / "marks"
        marks.mkdir()

        @PythonTask(inputs=[x], outputs=[y])
        def flaky(x):
            mark = marks / str(x)
            if x % 3 == 0 and not mark.exists():
                mark.touch()
                raise RuntimeError(f"transient failure {x}")
            return x

        DirectSampling(
            evaluation=flaky.on(LocalEnvironment(2, retry=2)), sampling=x.in_(range(9))
        ).hook(work_directory / "r.csv")
        """,
        work,
    )
    assert execution.state is State.FINISHED, execution.error
    lines = (work / "r.csv").read_text().split()
    assert sorted(int(line.split(",")[1]) for line in lines[1:]) == list(range(9))
    warnings = [e for e in execution.errors() if e.level is ErrorLevel.WARNING]
    assert warnings and all("is run again" in w.message for w in warnings)
    assert sum(w.count for w in warnings) == 3
    assert execution.snapshot().environments[0].failed == 3


def test_a_job_lost_with_its_worker_is_resubmitted(engine: Engine, work: Path) -> None:
    execution = run(
        engine,
        """
        import os, signal
        x, y = Val(int), Val(int)
        mark = work_directory / "killed"

        @PythonTask(inputs=[x], outputs=[y])
        def deadly(x):
            if x == 3 and not mark.exists():
                mark.touch()
                os.kill(os.getpid(), signal.SIGKILL)
            return x * 2

        DirectSampling(evaluation=deadly.by(1), sampling=x.in_(range(6))).hook(work_directory / "r.csv")
        """,
        work,
        timeout=120,
    )
    assert execution.state is State.FINISHED, execution.error
    assert (work / "killed").exists()
    values = sorted(int(v.split(",")[1]) for v in (work / "r.csv").read_text().split()[1:])
    assert values == [0, 2, 4, 6, 8, 10]  # complete, and no job counted twice
    warnings = [e for e in execution.errors() if e.level is ErrorLevel.WARNING]
    assert any("lost with their worker" in w.message for w in warnings)
    snapshot = execution.snapshot()
    assert snapshot.environments[0].failed >= 1
    assert snapshot.completed == 6


def _pid_from(path: Path, timeout: float = 30) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{path} was never written")


def test_cancel_kills_a_running_system_exec_process_and_keeps_files(
    engine: Engine, work: Path
) -> None:
    execution = start(
        engine,
        """
        x = Val(int)
        sleeper = SystemExecTask(
            "sh -c 'echo $$ > " + str(work_directory) + "/pid-${x}; exec sleep 30'",
            inputs=[x],
        )
        DirectSampling(evaluation=sleeper, sampling=x.in_([1])).hook(display)
        """,
        work,
    )
    pid = _pid_from(work / "pid-1")
    assert psutil.pid_exists(pid)
    cancelled_at = time.time()
    execution.cancel()
    assert execution.wait(20) is State.CANCELLED
    while psutil.pid_exists(pid) and time.time() - cancelled_at < 2:
        time.sleep(0.02)
    gone_after = time.time() - cancelled_at
    alive = psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    assert not alive, "the command survived the cancel"
    assert gone_after < 2
    assert (work / "pid-1").exists() and (work / "test.oms").exists()
    assert execution.error == "the execution was cancelled"
    snapshot = execution.snapshot()
    assert snapshot.running == snapshot.ready == 0
    assert snapshot.environments[0].running == snapshot.environments[0].submitted == 0


def test_cancel_interrupts_a_running_python_task_and_frees_the_workers(
    engine: Engine, work: Path
) -> None:
    execution = start(
        engine,
        """
        import time
        x = Val(int)

        @PythonTask(inputs=[x])
        def forever(x):
            (work_directory / f"started-{x}").touch()
            while True:
                time.sleep(0.01)

        DirectSampling(evaluation=forever.by(1), sampling=x.in_([1, 2]))
        """,
        work,
    )
    deadline = time.time() + 30
    while not (work / "started-1").exists() or not (work / "started-2").exists():
        assert time.time() < deadline, "the jobs never started"
        time.sleep(0.05)
    execution.cancel()
    assert execution.wait(20) is State.CANCELLED
    # Both workers are free again: a new execution runs two jobs at once, at once.
    began = time.time()
    again = run(
        engine,
        """
        import time
        x = Val(int)
        DirectSampling(evaluation=PythonTask("import time; time.sleep(0.5)", inputs=[x]).by(1), sampling=x.in_([1, 2]))
        """,
        work / "..",
        timeout=30,
    )
    assert again.state is State.FINISHED, again.error
    assert time.time() - began < 5


def test_errors_since_last_read_are_per_reader(engine: Engine, work: Path) -> None:
    execution = run(
        engine,
        """
        x = Val(int)
        marks = work_directory / "m"
        marks.mkdir()

        @PythonTask(inputs=[x])
        def once(x):
            if not (marks / str(x)).exists():
                (marks / str(x)).touch()
                raise RuntimeError(f"first try of {x}")

        DirectSampling(evaluation=once.on(LocalEnvironment(retry=1)), sampling=x.in_([1, 2]))
        """,
        work,
    )
    assert execution.state is State.FINISHED, execution.error
    first = execution.errors_since_last_read("widget")
    assert {e.message.rsplit(" ", 1)[-1] for e in first} == {"1", "2"}
    assert execution.errors_since_last_read("widget") == []
    assert execution.errors_since_last_read("sidebar") == first
    assert execution.errors() == first


@pytest.mark.parametrize("retry", [-1, 1.5])
def test_bad_environment_arguments_are_explained(retry: object) -> None:
    from jupyter_mole.engine.dsl import LocalEnvironment
    from jupyter_mole.engine.errors import WorkflowError

    with pytest.raises(WorkflowError, match="retry must be a whole number of 0 or more"):
        LocalEnvironment(2, retry=retry)  # type: ignore[arg-type]


def test_no_job_process_outlives_the_engine(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    with Engine(tmp_path / "state", n_workers=1) as engine:
        start(
            engine,
            f"""
            x = Val(int)
            DirectSampling(
                evaluation=SystemExecTask("sh -c 'echo $$ > {work}/pid; exec sleep 30'", inputs=[x]),
                sampling=x.in_([1]),
            )
            """,
            work,
        )
        pid = _pid_from(work / "pid")
    time.sleep(0.5)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert os.getpid()  # the test process itself is fine
