"""PythonTask and EmptyTask run directly: inputs, outputs, defaults, checks, pickling."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from jupyter_mole.engine import load_source
from jupyter_mole.engine.dsl import EmptyTask, PythonTask, Task, Val
from jupyter_mole.engine.errors import WorkflowError
from jupyter_mole.engine.job import JobContext


@pytest.fixture
def job(tmp_path: Path) -> JobContext:
    return JobContext(work_directory=tmp_path, scratch_directory=tmp_path / "s")


@pytest.fixture
def x() -> Val:
    return Val(float, name="x")


@pytest.fixture
def y() -> Val:
    return Val(float, name="y")


@pytest.fixture
def n() -> Val:
    return Val(int, name="n")


def perform_error(task: Task, context: dict[str, Any], job: JobContext) -> str:
    with pytest.raises(WorkflowError) as info:
        task.perform(context, job)
    return str(info.value)


# -- the decorator form ----------------------------------------------------------------------------


def test_decorator_form_runs_the_function_on_its_inputs(x: Val, y: Val, job: JobContext) -> None:
    @PythonTask(inputs=[x], outputs=[y])
    def double(x):
        return {"y": 2 * x}

    assert isinstance(double, PythonTask)
    assert double.name == "double"
    assert double.inputs == (x,)
    assert double.outputs == (y,)
    assert double.perform({"x": 1.5}, job) == {"y": 3.0}


def test_decorator_form_keeps_an_explicit_name(x: Val, y: Val, job: JobContext) -> None:
    @PythonTask(inputs=[x], outputs=[y], name="model")
    def f(x):
        return x

    assert f.name == "model"
    assert repr(f) == "PythonTask(model)"


def test_a_task_is_not_called_like_a_function(x: Val, y: Val) -> None:
    @PythonTask(inputs=[x], outputs=[y])
    def model(x):
        return x

    with pytest.raises(WorkflowError) as info:
        model(1.0)
    assert str(info.value) == (
        "task model is already defined; to run it, put it in a workflow "
        "(it is not called like a function)"
    )


def test_the_decorator_only_takes_functions(x: Val) -> None:
    with pytest.raises(
        WorkflowError, match=r"@PythonTask\(\.\.\.\) decorates a function, got a `int`"
    ):
        PythonTask(inputs=[x])(3)


def test_python_task_takes_a_function_or_text() -> None:
    with pytest.raises(WorkflowError) as info:
        PythonTask(42)  # type: ignore[arg-type]
    assert str(info.value) == "PythonTask takes a function or source text, got a `int`"


@pytest.mark.parametrize("what", ["inputs", "outputs"])
def test_inputs_and_outputs_must_be_vals(what: str) -> None:
    with pytest.raises(WorkflowError) as info:
        PythonTask("y = 1", **{what: ["x"]})
    assert str(info.value) == f"the {what} of task PythonTask must be Vals, got a `str`"


def test_the_function_gets_only_the_inputs_it_names(x: Val, y: Val, job: JobContext) -> None:
    seen: list[dict[str, Any]] = []

    @PythonTask(inputs=[x, y], outputs=[y])
    def model(y):
        seen.append({"y": y})
        return y + 1

    assert model.perform({"x": 1.0, "y": 2.0, "other": "ignored"}, job) == {"y": 3.0}
    assert seen == [{"y": 2.0}]


def test_a_parameter_with_a_default_that_is_not_an_input_keeps_its_default(
    x: Val, y: Val, job: JobContext
) -> None:
    @PythonTask(inputs=[x], outputs=[y])
    def model(x, scale=10):
        return x * scale

    assert model.perform({"x": 1.5}, job) == {"y": 15.0}


def test_a_function_taking_keyword_arguments_gets_every_input(
    x: Val, y: Val, job: JobContext
) -> None:
    @PythonTask(inputs=[x], outputs=[y])
    def model(**inputs):
        return inputs["x"] + 1

    assert model.perform({"x": 1.0}, job) == {"y": 2.0}


def test_a_function_of_no_parameters_gets_none_of_the_inputs(
    x: Val, y: Val, job: JobContext
) -> None:
    # The function takes the inputs it names: here none, though the task declares one.
    @PythonTask(inputs=[x], outputs=[y])
    def model():
        return 7.0

    assert model.perform({"x": 1.0}, job) == {"y": 7.0}
    assert model.perform({"x": 2.0}, job) == {"y": 7.0}  # the second call uses the cached plan


def test_the_task_does_not_change_the_context(x: Val, y: Val, job: JobContext) -> None:
    @PythonTask(inputs=[x], outputs=[y])
    def model(x):
        return x

    context = {"x": 1}
    model.perform(context, job)
    assert context == {"x": 1}


# -- what the function returns ---------------------------------------------------------------------


def test_return_a_dict_keeps_only_declared_outputs(x: Val, y: Val, job: JobContext) -> None:
    @PythonTask(inputs=[x], outputs=[y])
    def model(x):
        return {"y": x + 1, "extra": "dropped", "x": 99.0}

    assert model.perform({"x": 1.0}, job) == {"y": 2.0}


def test_return_a_tuple_in_the_order_of_outputs(x: Val, y: Val, n: Val, job: JobContext) -> None:
    @PythonTask(inputs=[x], outputs=[y, n])
    def model(x):
        return x * 2, 7

    assert model.perform({"x": 1.0}, job) == {"y": 2.0, "n": 7}


def test_return_the_bare_value_of_a_single_output(x: Val, n: Val, job: JobContext) -> None:
    @PythonTask(inputs=[x], outputs=[n])
    def model(x):
        return int(x)

    result = model.perform({"x": 4.0}, job)
    assert result == {"n": 4}
    assert type(result["n"]) is int


def test_a_task_without_outputs_produces_nothing(x: Val, job: JobContext) -> None:
    calls = []

    @PythonTask(inputs=[x])
    def model(x):
        calls.append(x)
        return "whatever"

    assert model.perform({"x": 1.0}, job) == {}
    assert calls == [1.0]


@pytest.mark.parametrize(
    ("returned", "kind"), [([1.0, 2], "list"), ((1.0, 2, 3), "tuple"), ("ab", "str")]
)
def test_a_wrong_return_shape_is_explained(
    x: Val, y: Val, n: Val, job: JobContext, returned: Any, kind: str
) -> None:
    @PythonTask(inputs=[x], outputs=[y, n])
    def model(x):
        return returned

    assert perform_error(model, {"x": 1.0}, job) == (
        f"task model returned a `{kind}`; return a dict of its outputs (y, n) "
        "or a tuple of 2 values in that order"
    )


def test_a_missing_output_is_named(x: Val, y: Val, job: JobContext) -> None:
    @PythonTask(inputs=[x], outputs=[y])
    def model(x):
        return {"z": 1.0}

    assert (
        perform_error(model, {"x": 1.0}, job) == "task model did not produce its output y (float)"
    )


def test_an_output_that_is_also_an_input_passes_through(x: Val, y: Val, job: JobContext) -> None:
    @PythonTask(inputs=[x], outputs=[x, y])
    def model(x):
        return {"y": x + 1}

    assert model.perform({"x": 1}, job) == {"x": 1.0, "y": 2.0}


def test_an_output_that_is_also_an_input_takes_the_new_value(x: Val, job: JobContext) -> None:
    @PythonTask(inputs=[x], outputs=[x])
    def model(x):
        return {"x": x * 10}

    assert model.perform({"x": 2.0}, job) == {"x": 20.0}


# -- type checks at the boundary -------------------------------------------------------------------


def test_an_input_of_the_wrong_type_names_the_task_value_and_types(
    x: Val, y: Val, job: JobContext
) -> None:
    @PythonTask(inputs=[x], outputs=[y])
    def model(x):
        return x

    assert perform_error(model, {"x": "abc"}, job) == (
        "task model, input: x should be float, got str 'abc'"
    )


def test_an_int_input_reaches_the_function_as_a_float(x: Val, y: Val, job: JobContext) -> None:
    seen = []

    @PythonTask(inputs=[x], outputs=[y])
    def model(x):
        seen.append(type(x))
        return x

    model.perform({"x": 3}, job)
    assert seen == [float]


def test_an_output_of_the_wrong_type_names_the_task_value_and_types(
    x: Val, n: Val, job: JobContext
) -> None:
    @PythonTask(inputs=[x], outputs=[n])
    def model(x):
        return {"n": x / 2}

    assert perform_error(model, {"x": 5.0}, job) == (
        "task model, output: n should be int, got float 2.5"
    )


def test_an_int_output_of_a_float_value_becomes_a_float(x: Val, y: Val, job: JobContext) -> None:
    @PythonTask(inputs=[x], outputs=[y])
    def model(x):
        return 2

    result = model.perform({"x": 5.0}, job)
    assert result == {"y": 2.0}
    assert type(result["y"]) is float


def test_a_missing_input_is_named(x: Val, y: Val, job: JobContext) -> None:
    @PythonTask(inputs=[x], outputs=[y])
    def model(x):
        return x

    assert perform_error(model, {"y": 1.0}, job) == (
        "task model: input x is missing from the context"
    )


def test_an_exception_in_the_function_propagates(x: Val, y: Val, job: JobContext) -> None:
    @PythonTask(inputs=[x], outputs=[y])
    def model(x):
        return 1 / x

    with pytest.raises(ZeroDivisionError):
        model.perform({"x": 0.0}, job)


# -- defaults --------------------------------------------------------------------------------------


def test_a_default_is_used_when_the_context_lacks_the_value(
    x: Val, y: Val, job: JobContext
) -> None:
    @PythonTask(inputs=[x], outputs=[y], defaults={x: 3})
    def model(x):
        return x + 1

    result = model.perform({}, job)
    assert result == {"y": 4.0}
    assert type(result["y"]) is float


def test_the_context_wins_over_a_default(x: Val, y: Val, job: JobContext) -> None:
    @PythonTask(inputs=[x], outputs=[y], defaults={x: 3})
    def model(x):
        return x + 1

    assert model.perform({"x": 10.0}, job) == {"y": 11.0}


def test_a_default_makes_a_value_an_input(x: Val, y: Val, n: Val, job: JobContext) -> None:
    @PythonTask(inputs=[x], outputs=[y], defaults={n: 2})
    def model(x, n):
        return x * n

    assert model.inputs == (x, n)
    assert model.perform({"x": 1.5}, job) == {"y": 3.0}


def test_a_default_of_the_wrong_type_is_caught_when_used(x: Val, y: Val, job: JobContext) -> None:
    @PythonTask(inputs=[x], outputs=[y], defaults={x: "three"})
    def model(x):
        return x

    assert perform_error(model, {}, job) == (
        "task model, input: x should be float, got str 'three'"
    )


def test_defaults_are_keyed_by_vals() -> None:
    with pytest.raises(WorkflowError) as info:
        EmptyTask(defaults={"x": 3}, name="t")  # type: ignore[dict-item]
    assert str(info.value) == "the defaults of task t are keyed by Vals ({x: 3}), got a `str`"


# -- source text -----------------------------------------------------------------------------------


def test_source_text_sees_inputs_as_variables(x: Val, y: Val, job: JobContext) -> None:
    task = PythonTask("y = 2 * x", inputs=[x], outputs=[y])
    assert task.name == "PythonTask"
    assert task.perform({"x": 1.5}, job) == {"y": 3.0}
    assert task.perform({"x": 2.0}, job) == {"y": 4.0}  # compiled once, run again


def test_source_text_keeps_only_declared_outputs(x: Val, y: Val, job: JobContext) -> None:
    task = PythonTask("tmp = x + 1\ny = tmp * 2\nz = 'dropped'", inputs=[x], outputs=[y])
    assert task.perform({"x": 1.0}, job) == {"y": 4.0}


def test_source_text_may_import(x: Val, y: Val, job: JobContext) -> None:
    task = PythonTask("import math\ny = math.sqrt(x)", inputs=[x], outputs=[y])
    assert task.perform({"x": 9.0}, job) == {"y": 3.0}


def test_source_text_does_not_see_the_callers_names(x: Val, y: Val, job: JobContext) -> None:
    task = PythonTask("y = json.dumps(x)", inputs=[x], outputs=[y])
    assert json  # imported in this module, but not visible to the text
    with pytest.raises(NameError, match="json"):
        task.perform({"x": 1.0}, job)


def test_source_text_not_setting_an_output_names_it(x: Val, y: Val, job: JobContext) -> None:
    task = PythonTask("z = x", inputs=[x], outputs=[y], name="t")
    assert perform_error(task, {"x": 1.0}, job) == "task t did not produce its output y (float)"


def test_source_text_output_type_is_checked(x: Val, n: Val, job: JobContext) -> None:
    task = PythonTask("n = str(x)", inputs=[x], outputs=[n], name="t")
    assert perform_error(task, {"x": 1.0}, job) == "task t, output: n should be int, got str '1.0'"


def test_source_text_input_passes_through_as_output(x: Val, y: Val, job: JobContext) -> None:
    task = PythonTask("y = x + 1", inputs=[x], outputs=[x, y])
    assert task.perform({"x": 1}, job) == {"x": 1.0, "y": 2.0}


# -- EmptyTask -------------------------------------------------------------------------------------


def test_empty_task_passes_its_declared_outputs_through(x: Val, n: Val, job: JobContext) -> None:
    task = EmptyTask(inputs=[x, n], outputs=[x])
    assert task.name == "EmptyTask"
    assert task.perform({"x": 1, "n": 2, "other": 3}, job) == {"x": 1.0}


def test_empty_task_with_a_default(x: Val, n: Val, job: JobContext) -> None:
    task = EmptyTask(outputs=[n], defaults={n: 3})
    assert task.inputs == (n,)
    assert task.perform({}, job) == {"n": 3}
    assert task.perform({"n": 5}, job) == {"n": 5}


def test_empty_task_checks_types(n: Val, job: JobContext) -> None:
    task = EmptyTask(inputs=[n], outputs=[n], name="e")
    assert perform_error(task, {"n": 1.5}, job) == "task e, input: n should be int, got float 1.5"


def test_empty_task_output_that_is_not_an_input_is_missing(x: Val, y: Val, job: JobContext) -> None:
    task = EmptyTask(inputs=[x], outputs=[y], name="e")
    assert perform_error(task, {"x": 1.0}, job) == "task e did not produce its output y (float)"


# -- pickling --------------------------------------------------------------------------------------


def roundtrip(task: Task) -> Task:
    return cloudpickle.loads(cloudpickle.dumps(task))


def test_a_closure_with_an_import_inside_survives_a_round_trip(
    x: Val, n: Val, job: JobContext
) -> None:
    def make(scale: int) -> PythonTask:
        @PythonTask(inputs=[x], outputs=[n])
        def scaled(x):
            import math

            return math.floor(x * scale)

        return scaled

    task = make(10)
    assert task.perform({"x": 1.55}, job) == {"n": 15}  # runs once before pickling
    clone = roundtrip(task)
    assert clone is not task
    assert clone.name == "scaled"
    assert [v.name for v in clone.inputs] == ["x"]
    assert clone.perform({"x": 2.25}, job) == {"n": 22}
    assert perform_error(clone, {"x": "a"}, job) == (
        "task scaled, input: x should be float, got str 'a'"
    )


def test_a_source_text_task_survives_a_round_trip_after_running(
    x: Val, y: Val, job: JobContext
) -> None:
    task = PythonTask("import math\ny = math.sqrt(x)", inputs=[x], outputs=[y], name="root")
    assert task.perform({"x": 4.0}, job) == {"y": 2.0}
    clone = roundtrip(task)
    assert clone.perform({"x": 16.0}, job) == {"y": 4.0}


def test_defaults_still_match_their_inputs_after_a_round_trip(
    x: Val, n: Val, job: JobContext
) -> None:
    task = EmptyTask(inputs=[x], outputs=[x, n], defaults={n: 3}, name="e")
    clone = roundtrip(task)
    (default,) = clone.defaults
    assert default is clone.inputs[1]
    assert clone.perform({"x": 1.0}, job) == {"x": 1.0, "n": 3}


def test_a_script_task_runs_in_a_fresh_interpreter_after_pickling(tmp_path: Path) -> None:
    source = textwrap.dedent(
        """
        import random

        x, y, seed = Val(float), Val(float), Val(int)
        OFFSET = 0.5

        def helper(v):
            return v + OFFSET

        @PythonTask(inputs=[x, seed], outputs=[y])
        def model(x, seed):
            import statistics
            rng = random.Random(seed)
            return helper(statistics.mean([x, x])) + 0 * rng.random()

        model
        """
    )
    script = load_source(source, str(tmp_path / "model.oms"), tmp_path)
    task = script.namespace["model"]
    payload = tmp_path / "task.pickle"
    payload.write_bytes(cloudpickle.dumps(task))
    code = textwrap.dedent(
        f"""
        import json, pathlib, pickle
        from jupyter_mole.engine.job import JobContext
        task = pickle.loads(pathlib.Path({str(payload)!r}).read_bytes())
        root = pathlib.Path({str(tmp_path)!r})
        job = JobContext(work_directory=root, scratch_directory=root / "s")
        print(json.dumps([task.name, task.perform({{"x": 2, "seed": 1}}, job)]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["model", {"y": 2.5}]
