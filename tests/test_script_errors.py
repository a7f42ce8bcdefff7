"""Loading scripts that go wrong: every load error, and the workflow's static checks.

Split from tests/test_script.py (which keeps names, the last expression, sequences and the
DSL's arguments) to keep each file under 600 lines; shared helpers are in tests/scripts.py.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from jupyter_mole.engine import (
    ScalaScriptError,
    ScriptError,
    load_script,
)
from tests.scripts import MODEL, load, load_error, static_error, write

# -- load errors -----------------------------------------------------------------------------------


def test_a_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "x = Val(float)\ny = (1,\nx\n")
    with pytest.raises(ScriptError) as info:
        load_script(path)
    error = info.value
    assert not isinstance(error, ScalaScriptError)
    assert str(error).startswith("syntax error in pi.oms, line 2: ")
    assert "`y = (1,`" in str(error)
    assert error.filename == str(path)
    assert error.lineno == 2


def test_a_syntax_error_quotes_the_line(tmp_path: Path) -> None:
    error = load_error(tmp_path, "x = Val(float)\n\nx = = 1\nEmptyTask()\n")
    assert str(error).startswith("syntax error in pi.oms, line 3: ")
    assert str(error).endswith("`x = = 1`")
    assert error.lineno == 3


def test_an_exception_names_the_script_line_not_ours(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        x = Val(float)

        def ratio(a, b):
            return a / b

        r = ratio(1, 0)
        EmptyTask()
        """,
    )
    with pytest.raises(ScriptError) as info:
        load_script(path)
    error = info.value
    assert str(error) == "pi.oms, line 4: ZeroDivisionError: division by zero"
    assert error.filename == str(path)
    assert error.lineno == 4
    assert error.stack_trace is not None
    assert error.stack_trace.startswith(
        f'Traceback (most recent call last):\n  File "{path}", line 6, in <module>'
    )
    assert "return a / b" in error.stack_trace
    assert "jupyter_mole" not in error.stack_trace
    assert error.stack_trace.rstrip().endswith("ZeroDivisionError: division by zero")


def test_a_dsl_error_while_running_names_the_script_line(tmp_path: Path) -> None:
    path = write(tmp_path, "x = Val(float)\nt = EmptyTask(inputs=['x'])\nt\n")
    with pytest.raises(ScriptError) as info:
        load_script(path)
    error = info.value
    assert str(error) == "pi.oms, line 2: the inputs of task t must be Vals, got a `str`"
    assert error.lineno == 2
    assert error.stack_trace is not None
    first_frame = error.stack_trace.splitlines()[1]
    assert first_frame == f'  File "{path}", line 2, in <module>'


def test_an_error_on_the_last_line_names_it(tmp_path: Path) -> None:
    error = load_error(tmp_path, "x = Val(float)\n\nEmptyTask(outputs=[x]).by(0)\n")
    assert str(error) == "pi.oms, line 3: .by(n) takes a whole number of jobs of 1 or more, got 0"
    assert error.lineno == 3


def test_an_unknown_name_names_the_line(tmp_path: Path) -> None:
    error = load_error(tmp_path, "x = Val(float)\ny = Val(flaot)\nEmptyTask()\n")
    assert str(error) == "pi.oms, line 2: NameError: name 'flaot' is not defined"
    assert error.lineno == 2


def test_a_script_calling_exit_is_a_script_error(tmp_path: Path) -> None:
    with pytest.raises(ScriptError) as info:
        try:
            load(tmp_path, "import sys\nsys.exit(3)\nEmptyTask()\n")
        except SystemExit as e:
            raise AssertionError("SystemExit escaped the loader") from e
    assert "line 2" in str(info.value)


@pytest.mark.parametrize(
    ("last", "what"),
    [
        ("y = t", "an assignment"),
        ("y: object = t", "an assignment"),
        ("import os", "an import"),
        ("from os import path", "an import"),
        ("def f():\n    return t", "a function definition"),
        ("class C:\n    pass", "a class definition"),
        ("for i in range(2):\n    pass", "a for loop"),
        ("if True:\n    t", "an if statement"),
        ("with open(__file__):\n    pass", "a `With` statement"),
    ],
)
def test_a_last_line_that_is_not_an_expression_is_explained(
    tmp_path: Path, last: str, what: str
) -> None:
    error = load_error(tmp_path, "x = Val(float)\nt = EmptyTask()\n" + last + "\n")
    assert str(error) == (
        f"the last line of pi.oms (line 3) must be a workflow: a task, a method or a puzzle; "
        f"it is {what}. End the script with the workflow itself, e.g. `model` or "
        f"`DirectSampling(...)`"
    )
    assert error.lineno == 3
    assert error.filename == str(tmp_path / "pi.oms")


def test_a_decorated_task_definition_on_the_last_line_is_explained(tmp_path: Path) -> None:
    error = load_error(
        tmp_path, "x = Val(float)\n\n@PythonTask(inputs=[x])\ndef model(x):\n    pass\n"
    )
    assert "the last line of pi.oms (line 4) must be a workflow" in str(error)
    assert "it is a function definition. End the script with the workflow itself" in str(error)
    assert error.lineno == 4


@pytest.mark.parametrize(
    ("last", "kind"),
    [
        ("[1, 2]", "list"),
        ("x", "Val"),
        ("x.in_([1.0])", "Factor"),
        ("display", "DisplayHook"),
        ("print('hello')", "NoneType"),
        ("LocalEnvironment(2)", "LocalEnvironment"),
    ],
)
def test_a_last_expression_that_is_not_a_workflow_is_explained(
    tmp_path: Path, last: str, kind: str
) -> None:
    error = load_error(tmp_path, f"x = Val(float)\n\n{last}\n")
    assert str(error) == (
        f"the last line of pi.oms (line 3) must be a workflow: a task, a method or a puzzle; "
        f"it is a `{kind}`"
    )
    assert error.lineno == 3


@pytest.mark.parametrize("source", ["", "\n\n", "# only a comment\n# and another\n"])
def test_an_empty_script_is_explained(tmp_path: Path, source: str) -> None:
    error = load_error(tmp_path, source)
    assert str(error) == (
        "pi.oms is empty: its last line must be a workflow (a task, a method or a puzzle)"
    )
    assert error.filename == str(tmp_path / "pi.oms")


SCALA_PI = '''
// The OpenMOLE documentation's pi estimation
val seed = Val[Int]
val pi = Val[Double]
val piAvg = Val[Double]

val model = ScalaTask("""
  |val rng = newRNG(seed)
  |val pi = 4.0 * rng.nextDouble()""".stripMargin) set (
  inputs += seed,
  outputs += pi
)

Replication(
  evaluation = model,
  seed = seed,
  sample = 100,
  aggregation = Seq(pi evaluate average as piAvg)
) hook display
'''


def test_a_scala_script_needs_an_openmole_server(tmp_path: Path) -> None:
    path = write(tmp_path, SCALA_PI)
    with pytest.raises(ScalaScriptError) as info:
        load_script(path)
    error = info.value
    assert isinstance(error, ScriptError)
    message = str(error)
    assert message.startswith(
        "pi.oms is an OpenMOLE Scala script (line 2: `val seed = Val[Int]`); the embedded "
        "engine runs scripts written in Python."
    )
    assert "Send it to an OpenMOLE server" in message
    assert "rewrite it in the Python dialect" in message
    assert error.lineno == 2
    assert error.filename == str(path)


@pytest.mark.parametrize(
    ("source", "line"),
    [
        ("val x = Val[Double]\n", "val x = Val[Double]"),
        ("val x: Double = 3.0\n", "val x: Double = 3.0"),
        ("import _file_.model._\n\nval t = EmptyTask()\n", "import _file_.model._"),
        ("def f(x: Int): Int =\n  x + 1\n", "def f(x: Int): Int ="),
        ("model set (x := 3)\n", "model set (x := 3)"),
    ],
)
def test_scala_lines_are_recognised(tmp_path: Path, source: str, line: str) -> None:
    with pytest.raises(ScalaScriptError) as info:
        load(tmp_path, source)
    assert f"pi.oms is an OpenMOLE Scala script (line 1: `{line}`)" in str(info.value)
    assert info.value.lineno == 1


@pytest.mark.parametrize(
    "source",
    [
        "# OpenMOLE's Val[Double] is Val(float) here\nx = Val(float\nEmptyTask()\n",
        "if (n := 3) > 2:\n    pass\nx = Val(float\nEmptyTask()\n",
    ],
)
def test_a_python_script_with_a_syntax_error_is_not_taken_for_scala(
    tmp_path: Path, source: str
) -> None:
    error = load_error(tmp_path, source)
    assert not isinstance(error, ScalaScriptError)
    line = source.splitlines().index("x = Val(float") + 1
    assert str(error).startswith(f"syntax error in pi.oms, line {line}")


def test_a_missing_script_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "nope.oms"
    with pytest.raises(ScriptError) as info:
        load_script(path)
    assert str(info.value) == f"there is no script {path}"
    assert info.value.filename == str(path)


def test_a_script_that_is_not_utf8_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "pi.oms"
    path.write_bytes(b"x = '\xff\xfe'\nEmptyTask()\n")
    with pytest.raises(ScriptError) as info:
        load_script(path)
    assert str(info.value) == "pi.oms is not UTF-8 text"


def test_a_folder_is_not_a_script(tmp_path: Path) -> None:
    with pytest.raises(ScriptError, match="script"):
        load_script(tmp_path)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("DirectSampling(evaluation=t, sampling=x.in_('abc'))", "x.in_() takes values to explore"),
        ("DirectSampling(evaluation=t, sampling=x.in_(0.0, by=0.1))", "needs an end"),
        ("Replication(evaluation=t, seed=x, sample=3)", "Replication's seed x must be Val(int)"),
    ],
)
def test_dsl_errors_while_running_name_the_vals_of_the_script(
    tmp_path: Path, line: str, expected: str
) -> None:
    error = load_error(
        tmp_path, f"x = Val(float)\nt = EmptyTask(inputs=[x], outputs=[x])\n{line}\n"
    )
    assert expected in str(error)


# -- static validation of the loaded workflow ------------------------------------------------------


def test_a_task_whose_input_nothing_provides(tmp_path: Path) -> None:
    message = static_error(
        tmp_path,
        """
        seed, pi = Val(int), Val(float)

        @PythonTask(inputs=[seed], outputs=[pi])
        def model(seed):
            return 3.14

        model
        """,
    )
    assert message == (
        "task model needs input seed (int), which nothing provides here (available: nothing); "
        "produce it upstream, sample it, or give it a default: defaults={seed: ...}"
    )


def test_a_default_provides_an_input(tmp_path: Path) -> None:
    script = load(tmp_path, "k = Val(int)\nt = EmptyTask(outputs=[k], defaults={k: 3})\nt\n")
    assert script.workflow.provides({}) == {"k": script.namespace["k"]}


def test_a_sampled_value_provides_an_input(tmp_path: Path) -> None:
    script = load(tmp_path, MODEL + "\nDirectSampling(evaluation=model, sampling=x.in_([1.0]))\n")
    assert script.workflow.provides({}) == {}
    ns = script.namespace
    assert script.workflow.row_columns({}) == {"x": ns["x"], "y": ns["y"]}


def test_an_input_of_another_type_is_explained(tmp_path: Path) -> None:
    message = static_error(
        tmp_path,
        """
        x = Val(float)
        xi = Val(int, name="x")
        t = EmptyTask(inputs=[xi], outputs=[xi])
        DirectSampling(evaluation=t, sampling=x.in_([1.0, 2.0]))
        """,
    )
    assert message == "task t takes x as int, but here x is float"


def test_an_int_value_feeds_a_float_input(tmp_path: Path) -> None:
    script = load(
        tmp_path,
        """
        k = Val(int)
        kf = Val(float, name="k")
        t = EmptyTask(inputs=[kf], outputs=[kf])
        DirectSampling(evaluation=t, sampling=k.in_([1, 2]))
        """,
    )
    assert script.workflow.provides({}) == {}


def test_a_parameter_that_is_not_an_input_is_named(tmp_path: Path) -> None:
    message = static_error(
        tmp_path,
        MODEL
        + textwrap.dedent("""
    @PythonTask(inputs=[x], outputs=[y])
    def scaled(x, scale):
        return x * scale

    DirectSampling(evaluation=scaled, sampling=x.in_([1.0]))
    """),
    )
    assert message == (
        "PythonTask scaled: the function's parameter `scale` is not one of the task's inputs "
        "(inputs: x); add its Val to inputs=[...]"
    )


def test_parameters_with_defaults_or_varargs_need_no_input(tmp_path: Path) -> None:
    script = load(
        tmp_path,
        MODEL
        + textwrap.dedent("""
    @PythonTask(inputs=[x], outputs=[y])
    def flexible(x, scale=2, *rest, **options):
        return x * scale

    DirectSampling(evaluation=flexible, sampling=x.in_([1.0]))
    """),
    )
    assert script.workflow.provides({}) == {}


def test_a_python_task_without_code_is_explained(tmp_path: Path) -> None:
    message = static_error(
        tmp_path,
        """
        x = Val(float)
        t = PythonTask(inputs=[x], outputs=[x], defaults={x: 1.0})
        t
        """,
    )
    assert message == ("PythonTask t has no code: decorate a function with it, or give source text")


def test_a_task_hook_keeping_a_value_not_produced(tmp_path: Path) -> None:
    message = static_error(
        tmp_path,
        MODEL
        + textwrap.dedent("""
    DirectSampling(
        evaluation=model.hook(CSVHook(work_directory / "r.csv", values=[z])),
        sampling=x.in_([1.0]),
    )
    """),
    )
    assert message == "the hook of task model keeps z, which is not produced there (produced: y)"


def test_a_method_hook_keeping_a_value_not_produced(tmp_path: Path) -> None:
    message = static_error(
        tmp_path,
        MODEL + "\nDirectSampling(evaluation=model, sampling=x.in_([1.0])).hook(display(z))\n",
    )
    assert message == (
        "the hook of DirectSampling keeps z, which is not produced there (produced: x, y)"
    )


def test_a_method_hook_may_keep_sampled_values_and_outputs(tmp_path: Path) -> None:
    script = load(
        tmp_path,
        MODEL + "\nDirectSampling(evaluation=model, sampling=x.in_([1.0])).hook(display(x, y))\n",
    )
    assert script.workflow.provides({}) == {}


def test_an_aggregation_of_a_value_not_produced(tmp_path: Path) -> None:
    message = static_error(
        tmp_path,
        MODEL
        + textwrap.dedent("""
    DirectSampling(
        evaluation=model, sampling=x.in_([1.0]), aggregation=[z.evaluate(max).as_(w)]
    )
    """),
    )
    assert message == (
        "DirectSampling aggregates z, which the evaluation does not produce "
        "(produced: x, y); add it to the task's outputs"
    )


def test_a_replication_aggregation_of_a_value_not_produced(tmp_path: Path) -> None:
    message = static_error(
        tmp_path,
        """
        seed, pi = Val(int), Val(float)
        t = EmptyTask(inputs=[seed])
        Replication(evaluation=t, seed=seed, sample=3, aggregation=[pi])
        """,
    )
    assert message == (
        "Replication aggregates pi, which the evaluation does not produce "
        "(produced: seed); add it to the task's outputs"
    )


def test_aggregations_are_what_a_method_provides(tmp_path: Path) -> None:
    script = load(
        tmp_path,
        MODEL
        + textwrap.dedent("""
    from statistics import mean
    DirectSampling(
        evaluation=model,
        sampling=x.in_([1.0, 2.0]),
        aggregation=[y.evaluate(mean).as_(w), x, y.evaluate(max)],
    )
    """),
    )
    provided = script.workflow.provides({})
    assert list(provided) == ["w", "x", "y"]
    assert provided["w"] is script.namespace["w"]
    assert provided["x"].type == list[float]
    assert provided["y"].type is object
