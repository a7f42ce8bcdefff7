"""What a running job prints reaches its execution's output before the job ends.

Each test holds its job on a file that the test creates only once the job's
first line is in the execution's output: the line can only have got there
while the job was still running, so no timing is asserted beyond generous
timeouts.
"""

from __future__ import annotations

import time
from pathlib import Path

from jupyter_mole.engine import Engine, Execution, State

from .test_execution import start

TIMEOUT = 30.0


def _wait_for_output(execution: Execution, line: str, timeout: float = TIMEOUT) -> None:
    deadline = time.time() + timeout
    while line not in execution.output()[0].splitlines():
        assert not execution.done, f"the execution ended before {line!r} was seen"
        assert time.time() < deadline, f"{line!r} did not reach the output while the job ran"
        time.sleep(0.05)


def _assert_once_in_order(execution: Execution, lines: list[str]) -> None:
    assert execution.wait(TIMEOUT) is State.FINISHED, execution.error
    printed = execution.output()[0].splitlines()
    assert [line for line in printed if line in lines] == lines, printed


def test_a_python_task_print_is_streamed_while_it_runs(engine: Engine, work: Path) -> None:
    execution = start(
        engine,
        """
        import time
        x = Val(int)

        @PythonTask(inputs=[x])
        def slow(x):
            print("step 1", flush=True)
            deadline = time.time() + 60
            while not (work_directory / "go").exists():
                if time.time() > deadline:
                    raise RuntimeError("the test never saw step 1")
                time.sleep(0.05)
            print("step 2")

        DirectSampling(evaluation=slow.by(1), sampling=x.in_([1]))
        """,
        work,
    )
    _wait_for_output(execution, "step 1")
    (work / "go").touch()
    _assert_once_in_order(execution, ["step 1", "step 2"])


def test_a_system_exec_task_output_is_streamed_command_by_command(
    engine: Engine, work: Path
) -> None:
    # SystemExecTask writes a command's uncaptured stdout once that command ends
    # (it reads it with communicate()), so the first line comes from a first command.
    go = work / "go"
    wait = f"i=0; while [ ! -e {go} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done"
    execution = start(
        engine,
        f"""
        x = Val(int)
        task = SystemExecTask(
            ["echo first", "{wait}; echo second"], inputs=[x], shell=True
        )
        DirectSampling(evaluation=task.by(1), sampling=x.in_([1]))
        """,
        work,
    )
    _wait_for_output(execution, "first")
    go.touch()
    _assert_once_in_order(execution, ["first", "second"])


def test_what_a_cancelled_job_streamed_stays_in_the_output(engine: Engine, work: Path) -> None:
    execution = start(
        engine,
        """
        import time
        x = Val(int)

        @PythonTask(inputs=[x])
        def endless(x):
            print("before the cancel", flush=True)
            deadline = time.time() + 60
            while time.time() < deadline:
                time.sleep(0.05)

        DirectSampling(evaluation=endless.by(1), sampling=x.in_([1]))
        """,
        work,
    )
    _wait_for_output(execution, "before the cancel")
    execution.cancel()
    assert execution.wait(TIMEOUT) is State.CANCELLED
    assert execution.output()[0].splitlines().count("before the cancel") == 1
