"""What an execution tells as it runs: its output in order, its warnings before it gives up."""

from __future__ import annotations

from pathlib import Path

from jupyter_mole.engine import Engine, ErrorLevel, State
from tests.test_execution import run


def test_what_a_job_prints_comes_right_before_its_row(engine: Engine, work: Path) -> None:
    execution = run(
        engine,
        """
        x, y = Val(int), Val(int)

        @PythonTask(inputs=[x], outputs=[y])
        def square(x):
            print(f"squaring {x}")
            return x * x

        DirectSampling(
            evaluation=square.on(LocalEnvironment(1)).by(1), sampling=x.in_(range(12))
        ).hook(display)
        """,
        work,
    )
    assert execution.state is State.FINISHED, execution.error
    lines = [line.split() for line in execution.output()[0].splitlines()]
    # The header comes with the first row, after what the first job printed.
    assert lines[1] == ["x", "y"]
    del lines[1]
    expected = []
    for x in range(12):
        expected += [["squaring", str(x)], [str(x), str(x * x)]]
    assert lines == expected


def test_a_job_that_fails_every_time_warns_each_retry_then_fails(
    engine: Engine, work: Path
) -> None:
    execution = run(
        engine,
        """
        x, y = Val(int), Val(int)

        @PythonTask(inputs=[x], outputs=[y])
        def broken(x):
            raise RuntimeError(f"broken on {x}")

        DirectSampling(
            evaluation=broken.on(LocalEnvironment(1, retry=2)), sampling=x.in_([5])
        )
        """,
        work,
    )
    assert execution.state is State.FAILED
    assert execution.error == "task broken failed on inputs {x=5}: RuntimeError: broken on 5"
    assert execution.failed_task == "broken"
    log = [(e.level, e.message, e.count) for e in execution.errors()]
    assert log == [
        (
            ErrorLevel.WARNING,
            "a job of task broken failed and is run again (1/2): RuntimeError: broken on 5",
            1,
        ),
        (
            ErrorLevel.WARNING,
            "a job of task broken failed and is run again (2/2): RuntimeError: broken on 5",
            1,
        ),
        (ErrorLevel.SEVERE, "task broken failed: RuntimeError: broken on 5", 1),
    ]
    assert all("raise RuntimeError" in (e.stack_trace or "") for e in execution.errors())
    (environment,) = execution.snapshot().environments
    assert environment.failed == 3
