"""Errors found while a task runs name the task once, and the script line that defines it."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest

from jupyter_mole.engine import Engine, State, WorkflowError, load_source
from jupyter_mole.engine.errors import TaskError
from jupyter_mole.engine.job import JobContext
from tests.test_execution import run


@pytest.fixture
def job(tmp_path: Path) -> JobContext:
    return JobContext(work_directory=tmp_path, scratch_directory=tmp_path / "s")


def load(source: str, name: str = "pi.oms") -> dict:
    """The names a script defines, the script loaded as ``name``."""
    return load_source(textwrap.dedent(source).lstrip("\n"), f"/somewhere/{name}").namespace


def perform_error(task, context: dict, job: JobContext) -> TaskError:
    with pytest.raises(TaskError) as info:
        task.perform(context, job)
    return info.value


# -- the task's own error: the whole sentence ------------------------------------------------------


def test_a_wrong_output_type_names_the_script_line_of_the_decorator(job: JobContext) -> None:
    names = load(
        """
        import math
        x, y = Val(int), Val(int)

        @PythonTask(inputs=[x], outputs=[y])
        def model(x):
            return {"y": 0.0}

        model
        """
    )
    error = perform_error(names["model"], {"x": 1}, job)
    assert str(error) == "task model (pi.oms, line 4), output: y should be int, got float 0.0"
    # What the engine puts after "task model failed on inputs {x=1}: ".
    assert error.message == "output: y should be int, got float 0.0 (pi.oms, line 4)"
    assert isinstance(error, WorkflowError)


def test_a_call_over_several_lines_is_placed_at_its_first_line(job: JobContext) -> None:
    names = load(
        """
        y = Val(int)
        text = PythonTask(
            "y = 'a'",
            outputs=[y],
        )
        text
        """
    )
    assert str(perform_error(names["text"], {}, job)) == (
        "task text (pi.oms, line 2), output: y should be int, got str 'a'"
    )


def test_a_function_returning_the_wrong_shape_names_its_line(job: JobContext) -> None:
    names = load(
        """
        a, b = Val(int), Val(int)

        @PythonTask(outputs=[a, b])
        def pair():
            return [1, 2]

        pair
        """
    )
    error = perform_error(names["pair"], {}, job)
    assert str(error) == (
        "task pair (pi.oms, line 3) returned a `list`; return a dict of its outputs (a, b) "
        "or a tuple of 2 values in that order"
    )
    assert error.message == (
        "returned a `list` (pi.oms, line 3); return a dict of its outputs (a, b) "
        "or a tuple of 2 values in that order"
    )


def test_a_missing_output_and_a_wrong_input_name_the_line(job: JobContext) -> None:
    names = load(
        """
        x, y = Val(float), Val(int)
        nothing = PythonTask("z = 1", inputs=[x], outputs=[y])
        nothing
        """
    )
    task = names["nothing"]
    assert str(perform_error(task, {"x": 1.0}, job)) == (
        "task nothing (pi.oms, line 2) did not produce its output y (int)"
    )
    assert str(perform_error(task, {"x": "a"}, job)) == (
        "task nothing (pi.oms, line 2), input: x should be float, got str 'a'"
    )


def test_a_task_made_by_a_function_of_the_script_is_placed_in_that_function(
    job: JobContext,
) -> None:
    names = load(
        """
        y = Val(int)

        def constant(value):
            return PythonTask(f"y = {value!r}", outputs=[y], name="constant")

        half = constant(0.5)
        half
        """
    )
    assert str(perform_error(names["half"], {}, job)) == (
        "task constant (pi.oms, line 4), output: y should be int, got float 0.5"
    )


def test_a_system_exec_exit_names_the_line_and_keeps_stderr_last(job: JobContext) -> None:
    names = load(
        """
        x = Val(int)
        t = SystemExecTask("sh -c 'echo boom >&2; exit 3'", inputs=[x])
        t
        """,
        name="run.oms",
    )
    error = perform_error(names["t"], {"x": 1}, job)
    assert str(error) == (
        "task t (run.oms, line 2): command `sh -c 'echo boom >&2; exit 3'` exited with code 3; "
        "its stderr ends with:\nboom\n"
    )
    assert error.message == (
        "command `sh -c 'echo boom >&2; exit 3'` exited with code 3 (run.oms, line 2); "
        "its stderr ends with:\nboom\n"
    )


def test_a_task_made_outside_a_script_names_no_line(job: JobContext) -> None:
    from jupyter_mole.engine.dsl import PythonTask, Val

    task = PythonTask("y = 'a'", outputs=[Val(int, name="y")], name="t")
    assert task.site is None
    assert str(perform_error(task, {}, job)) == "task t, output: y should be int, got str 'a'"


def test_a_task_error_survives_pickling() -> None:
    error = TaskError("t", "output: y should be int", "pi.oms, line 4", ", ", "!")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) == "task t (pi.oms, line 4), output: y should be int!"
    assert again.message == error.message == "output: y should be int (pi.oms, line 4)!"


# -- a Val without a name ---------------------------------------------------------------------------


def test_a_val_left_without_a_name_names_the_line_that_made_it() -> None:
    script = textwrap.dedent(
        """
        x = Val(int)
        outputs = [Val(float)]
        t = PythonTask("pass", outputs=outputs)
        t
        """
    ).lstrip("\n")
    workflow = load_source(script, "/somewhere/pi.oms").workflow
    with pytest.raises(WorkflowError) as info:
        workflow.provides({})
    assert str(info.value) == (
        "a Val(float) (made at pi.oms, line 2) has no name: assign it to a variable in the "
        "script, or give one with Val(float, name='x')"
    )


def test_a_val_made_outside_a_script_says_no_line() -> None:
    from jupyter_mole.engine.dsl import Val

    with pytest.raises(WorkflowError) as info:
        _ = Val(int).name
    assert str(info.value).startswith("a Val(int) has no name: ")


# -- through the engine: the task's name reads once --------------------------------------------------


def test_a_non_zero_exit_fails_the_execution_naming_the_task_once(
    engine: Engine, work: Path
) -> None:
    execution = run(
        engine,
        """
        x = Val(int)
        t = SystemExecTask("sh -c 'echo boom >&2; exit 3'", inputs=[x])
        DirectSampling(evaluation=t, sampling=x.in_([1]))
        """,
        work,
    )
    assert execution.state is State.FAILED
    assert execution.error == (
        "task t failed on inputs {x=1}: command `sh -c 'echo boom >&2; exit 3'` exited with "
        "code 3 (test.oms, line 3); its stderr ends with:\nboom\n"
    )
    (severe,) = execution.errors()
    assert severe.message.count("task t") == 1


def test_a_wrong_output_type_fails_the_execution_naming_task_and_line(
    engine: Engine, work: Path
) -> None:
    execution = run(
        engine,
        """
        x, y = Val(int), Val(int)

        @PythonTask(inputs=[x], outputs=[y])
        def model(x):
            return {"y": 0.0}

        DirectSampling(evaluation=model, sampling=x.in_([1]))
        """,
        work,
    )
    assert execution.state is State.FAILED
    assert execution.error == (
        "task model failed on inputs {x=1}: output: y should be int, got float 0.0 "
        "(test.oms, line 4)"
    )
