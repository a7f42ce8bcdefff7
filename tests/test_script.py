"""Loading scripts: names, the last expression, sequences, on/by/hook, and the arguments of
Replication and DirectSampling.

Load errors and the workflow's static checks are in tests/test_script_errors.py (split off to
keep each file under 600 lines); the helpers both use are in tests/scripts.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_mole.engine import (
    WorkflowError,
    load_script,
    load_source,
)
from jupyter_mole.engine.dsl import (
    Capsule,
    CSVHook,
    DirectSampling,
    DisplayHook,
    EmptyTask,
    Method,
    PythonTask,
    Replication,
    Sequence,
    Val,
    display,
)
from jupyter_mole.engine.dsl import __all__ as DSL_NAMES
from tests.scripts import MODEL, load, load_error, static_error, write

# -- names -----------------------------------------------------------------------------------------


def test_vals_tasks_and_environments_are_named_after_their_variables(tmp_path: Path) -> None:
    script = load(
        tmp_path,
        """
        from statistics import mean
        seed = Val(int)
        pi, pi_avg = Val(float), Val(float)
        speed = Val(float, name="velocity")
        alias = seed
        env = LocalEnvironment(2)
        noop = EmptyTask(inputs=[seed], outputs=[seed])
        text = PythonTask("pi = 3.0", inputs=[seed], outputs=[pi])
        fixed = EmptyTask(name="kept")

        @PythonTask(inputs=[seed], outputs=[pi])
        def model(seed):
            return 3.0

        Replication(
            evaluation=model.on(LocalEnvironment(1)),
            seed=seed,
            sample=2,
            aggregation=[pi.evaluate(mean).as_(pi_avg)],
        )
        """,
    )
    ns = script.namespace
    assert [ns[k].name for k in ("seed", "pi", "pi_avg")] == ["seed", "pi", "pi_avg"]
    assert ns["speed"].name == "velocity"
    assert ns["alias"] is ns["seed"]
    assert ns["seed"].name == "seed"
    assert ns["env"].name == "env"
    assert ns["noop"].name == "noop"
    assert ns["text"].name == "text"
    assert ns["fixed"].name == "kept"
    assert ns["model"].name == "model"
    (capsule,) = script.workflow.capsules()
    assert capsule.environment.name == "local"  # not assigned to a variable


def test_tuple_assignment_names_each_val(tmp_path: Path) -> None:
    script = load(
        tmp_path,
        """
        a, b = Val(float), Val(int)
        (c, d), e = (Val(str), Val(bool)), Val(float)
        EmptyTask(inputs=[a, b, c, d, e])
        """,
    )
    ns = script.namespace
    assert {k: (ns[k].name, ns[k].type) for k in "abcde"} == {
        "a": ("a", float),
        "b": ("b", int),
        "c": ("c", str),
        "d": ("d", bool),
        "e": ("e", float),
    }


def test_the_dsl_is_in_scope_without_imports(tmp_path: Path) -> None:
    script = load(tmp_path, f"names = [{', '.join(DSL_NAMES)}]\nEmptyTask()\n")
    from jupyter_mole.engine import dsl

    seen = script.namespace["names"]
    assert len(seen) == len(DSL_NAMES)
    for name, obj in zip(DSL_NAMES, seen):
        assert obj is getattr(dsl, name), name


def test_work_directory_is_a_path_in_scope(tmp_path: Path) -> None:
    script = load(tmp_path, "out = work_directory / 'r.csv'\nEmptyTask()\n")
    assert script.namespace["work_directory"] == tmp_path
    assert isinstance(script.namespace["work_directory"], Path)
    assert script.namespace["out"] == tmp_path / "r.csv"


def test_work_directory_can_be_given(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    path = write(tmp_path, "EmptyTask()\n")
    assert load_script(path, other).namespace["work_directory"] == other
    assert load_script(path, str(other)).namespace["work_directory"] == other
    script = load_source("EmptyTask()\n", str(path), str(other))
    assert script.namespace["work_directory"] == other


def test_the_script_knows_its_file(tmp_path: Path) -> None:
    path = write(tmp_path, "me = __file__\nEmptyTask()\n")
    script = load_script(path)
    assert script.path == str(path)
    assert script.namespace["me"] == str(path)


def test_each_script_starts_from_a_fresh_scope(tmp_path: Path) -> None:
    load(tmp_path, "leftover = 1\nVal = None\nEmptyTask()\n", "first.oms")
    script = load(tmp_path, "v = Val(float)\nEmptyTask()\n", "second.oms")
    assert script.namespace["v"].name == "v"
    error = load_error(tmp_path, "leftover\n", "third.oms")
    assert "NameError: name 'leftover' is not defined" in str(error)


def test_scripts_may_import_and_define_functions(tmp_path: Path) -> None:
    script = load(
        tmp_path,
        """
        import math

        def area(r):
            return math.pi * r * r

        r, a = Val(float), Val(float)
        PythonTask(area, inputs=[r], outputs=[a])
        """,
    )
    task = script.workflow.task
    assert task.name == "area"
    assert task.code(1.0) == pytest.approx(3.14159, rel=1e-5)


@pytest.fixture
def module_name() -> Iterator[str]:
    name = f"mole_helper_{uuid.uuid4().hex[:8]}"
    yield name
    sys.modules.pop(name, None)


def test_modules_beside_the_script_are_importable(tmp_path: Path, module_name: str) -> None:
    (tmp_path / f"{module_name}.py").write_text("FACTOR = 7\n")
    script = load(tmp_path, f"import {module_name}\nk = {module_name}.FACTOR\nEmptyTask()\n")
    assert script.namespace["k"] == 7
    assert str(tmp_path) not in sys.path  # the path is only extended while the script runs


def test_a_module_beside_a_later_script_is_not_a_stale_copy(
    tmp_path: Path, module_name: str
) -> None:
    for value in (1, 2):
        folder = tmp_path / f"run{value}"
        folder.mkdir()
        (folder / f"{module_name}.py").write_text(f"VALUE = {value}\n")
        script = load(folder, f"import {module_name}\nv = {module_name}.VALUE\nEmptyTask()\n")
        assert script.namespace["v"] == value


def test_a_work_directory_holding_installed_libraries_still_pickles_tasks() -> None:
    code = textwrap.dedent(
        """
        import pathlib, cloudpickle, numpy
        from jupyter_mole.engine import load_source
        site = pathlib.Path(numpy.__file__).resolve().parents[1]  # a venv's site-packages
        source = (
            "import numpy as np\\n"
            "x, y = Val(float), Val(float)\\n"
            "@PythonTask(inputs=[x], outputs=[y])\\n"
            "def model(x):\\n"
            "    return float(np.sum([x, 1.0]))\\n"
            "model\\n"
        )
        script = load_source(source, str(site / "pi.oms"), site)
        cloudpickle.dumps(script.namespace["model"])
        print("pickled")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("pickled")


# -- the workflow is the last expression -----------------------------------------------------------


def test_a_task_on_the_last_line_becomes_a_capsule(tmp_path: Path) -> None:
    script = load(tmp_path, MODEL + "\nmodel\n")
    assert isinstance(script.workflow, Capsule)
    assert script.workflow.task is script.namespace["model"]


def test_a_method_on_the_last_line_is_the_workflow(tmp_path: Path) -> None:
    script = load(
        tmp_path,
        MODEL
        + textwrap.dedent("""
    method = DirectSampling(evaluation=model, sampling=x.in_([1.0, 2.0]))
    method
    """),
    )
    assert script.workflow is script.namespace["method"]


def test_a_sequence_on_the_last_line_is_the_workflow(tmp_path: Path) -> None:
    script = load(
        tmp_path,
        MODEL
        + textwrap.dedent("""
    after = EmptyTask(inputs=[y], outputs=[y])
    model >> after
    """),
    )
    assert isinstance(script.workflow, Sequence)
    assert [c.task.name for c in script.workflow.capsules()] == ["model", "after"]


def test_a_multi_line_last_expression(tmp_path: Path) -> None:
    script = load(
        tmp_path,
        MODEL
        + textwrap.dedent("""
    DirectSampling(
        evaluation=model,
        sampling=x.in_(0.0, 1.0, by=0.5),
    )
    """),
    )
    assert isinstance(script.workflow, DirectSampling)
    assert list(script.workflow.points()) == [(0.0,), (0.5,), (1.0,)]


# -- sequences -------------------------------------------------------------------------------------


SEQUENCE = MODEL + textwrap.dedent("""
    @PythonTask(inputs=[y], outputs=[z])
    def after(y):
        return y * 2
""")


def test_a_sequence_feeds_each_task_the_outputs_of_the_previous(tmp_path: Path) -> None:
    script = load(
        tmp_path, SEQUENCE + "\nDirectSampling(evaluation=model >> after, sampling=x.in_([1.0]))\n"
    )
    ns = script.namespace
    # A method's rows hold the point and what the sequence ends with, not the steps between.
    assert script.workflow.row_columns({}) == {"x": ns["x"], "z": ns["z"]}


def test_the_next_task_sees_only_the_previous_outputs(tmp_path: Path) -> None:
    message = static_error(
        tmp_path,
        MODEL
        + textwrap.dedent("""
    @PythonTask(inputs=[x, y], outputs=[z])
    def after(x, y):
        return x + y

    DirectSampling(evaluation=model >> after, sampling=x.in_([1.0]))
    """),
    )
    assert message.startswith(
        "task after needs input x (float), which nothing provides here (available: y)"
    )


def test_a_value_passed_through_reaches_the_next_task(tmp_path: Path) -> None:
    script = load(
        tmp_path,
        """
        x, y, z = Val(float), Val(float), Val(float)

        @PythonTask(inputs=[x], outputs=[x, y])
        def first(x):
            return {"y": x}

        @PythonTask(inputs=[x, y], outputs=[z])
        def second(x, y):
            return x + y

        DirectSampling(evaluation=first >> second, sampling=x.in_([1.0]))
        """,
    )
    assert script.workflow.provides({}) == {}


def test_sequences_flatten(tmp_path: Path) -> None:
    script = load(
        tmp_path,
        SEQUENCE + "\nlast = EmptyTask(inputs=[z], outputs=[z])\n(model >> after) >> last\n",
    )
    workflow = script.workflow
    assert isinstance(workflow, Sequence)
    assert len(workflow.parts) == 3
    assert workflow.provides({"x": script.namespace["x"]}) == {"z": script.namespace["z"]}


def test_a_sequence_of_something_that_is_not_a_puzzle(tmp_path: Path) -> None:
    error = load_error(tmp_path, "t = EmptyTask()\nt >> 3\n")
    assert str(error) == "pi.oms, line 2: expected a task, a method or a puzzle, got a `int`"


def test_a_hook_on_a_sequence_goes_to_its_last_task(tmp_path: Path) -> None:
    script = load(tmp_path, SEQUENCE + "\n(model >> after).hook(display)\n")
    first, last = script.workflow.capsules()
    assert first.hooks == ()
    assert last.hooks == (display,)


# -- on, by, hook ----------------------------------------------------------------------------------


def test_on_sets_the_environment_of_tasks_that_have_none(tmp_path: Path) -> None:
    script = load(
        tmp_path,
        SEQUENCE
        + textwrap.dedent("""
    env, other = LocalEnvironment(2), LocalEnvironment(1)
    DirectSampling(evaluation=model.on(other) >> after, sampling=x.in_([1.0])).on(env)
    """),
    )
    ns = script.namespace
    first, second = script.workflow.capsules()
    assert first.environment is ns["other"]
    assert second.environment is ns["env"]
    assert isinstance(script.workflow, Method)


def test_on_does_not_change_the_task(tmp_path: Path) -> None:
    script = load(tmp_path, MODEL + "\nenv = LocalEnvironment(2)\nmodel.on(env)\n")
    assert isinstance(script.workflow, Capsule)
    assert script.workflow.environment is script.namespace["env"]
    assert script.workflow.task is script.namespace["model"]
    assert isinstance(script.namespace["model"], PythonTask)


def test_on_takes_an_environment(tmp_path: Path) -> None:
    error = load_error(tmp_path, "t = EmptyTask()\nt.on('local')\n")
    assert str(error) == (
        "pi.oms, line 2: .on() takes an environment such as LocalEnvironment(2), got str"
    )


def test_by_groups_jobs(tmp_path: Path) -> None:
    script = load(tmp_path, MODEL + "\nmodel.by(10)\n")
    assert script.workflow.grouping == 10
    method = load(
        tmp_path, MODEL + "\nDirectSampling(evaluation=model, sampling=x.in_([1.0])).by(5)\n"
    )
    (capsule,) = method.workflow.capsules()
    assert capsule.grouping == 5


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3", None])
def test_by_takes_a_whole_number_of_one_or_more(bad: Any) -> None:
    with pytest.raises(WorkflowError) as info:
        EmptyTask().by(bad)
    assert str(info.value) == f".by(n) takes a whole number of jobs of 1 or more, got {bad!r}"


def test_hook_with_a_csv_path_makes_a_csv_hook(tmp_path: Path) -> None:
    script = load(tmp_path, MODEL + "\nmodel.hook(work_directory / 'r.csv')\n")
    (hook,) = script.workflow.hooks
    assert isinstance(hook, CSVHook)
    assert hook.path == tmp_path / "r.csv"


def test_hooks_accumulate_on_a_method_without_changing_it(tmp_path: Path) -> None:
    script = load(
        tmp_path,
        MODEL
        + textwrap.dedent("""
    method = DirectSampling(evaluation=model, sampling=x.in_([1.0]))
    method.hook(display).hook("out/r.csv")
    """),
    )
    shown, csv_hook = script.workflow.hooks
    assert isinstance(shown, DisplayHook)
    assert isinstance(csv_hook, CSVHook)
    assert csv_hook.path == "out/r.csv"
    assert script.namespace["method"].hooks == ()


def test_a_hook_path_that_is_not_csv_is_explained(tmp_path: Path) -> None:
    error = load_error(tmp_path, "t = EmptyTask()\nt.hook(work_directory / 'r.txt')\n")
    assert str(error) == (
        f"pi.oms, line 2: a hook to a file writes CSV: name it with .csv "
        f"(got {str(tmp_path / 'r.txt')!r}), or use display / CopyFileHook"
    )


def test_a_hook_must_be_a_hook_or_a_path() -> None:
    with pytest.raises(WorkflowError) as info:
        EmptyTask().hook(3)
    assert str(info.value) == (
        ".hook() takes display, a path ending in .csv, or a hook such as CSVHook(...), got a `int`"
    )


# -- Replication and DirectSampling arguments ------------------------------------------------------


@pytest.fixture
def seed() -> Val:
    return Val(int, name="seed")


@pytest.fixture
def task(seed: Val) -> EmptyTask:
    return EmptyTask(inputs=[seed], outputs=[seed], name="t")


def test_replication_seed_must_be_a_val(task: EmptyTask) -> None:
    with pytest.raises(WorkflowError) as info:
        Replication(evaluation=task, seed=3, sample=2)  # type: ignore[arg-type]
    assert str(info.value) == "Replication's seed must be a Val (Val(int)), got a `int`"


def test_replication_seed_must_be_an_int_val(task: EmptyTask) -> None:
    with pytest.raises(WorkflowError) as info:
        Replication(evaluation=task, seed=Val(float, name="s"), sample=2)
    assert str(info.value) == "Replication's seed s must be Val(int), not Val(float)"


@pytest.mark.parametrize("bad", [0, -3, True, 2.5, "10", None])
def test_replication_sample_must_be_a_whole_number(task: EmptyTask, seed: Val, bad: Any) -> None:
    with pytest.raises(WorkflowError) as info:
        Replication(evaluation=task, seed=seed, sample=bad)
    assert str(info.value) == (
        f"Replication's sample must be a whole number of 1 or more, got {bad!r}"
    )


def test_replication_seeds_are_reproducible_with_a_distribution_seed(
    task: EmptyTask, seed: Val
) -> None:
    def seeds(distribution_seed: int | None) -> list[int]:
        method = Replication(
            evaluation=task, seed=seed, sample=20, distribution_seed=distribution_seed
        )
        assert method.size() == 20
        return [p[0] for p in method.points()]

    first = seeds(42)
    assert first == seeds(42)
    assert first != seeds(43)
    assert len(set(first)) == 20
    assert all(type(v) is int and 0 <= v < 2**31 for v in first)
    assert seeds(None) != seeds(None)


def test_replication_index_numbers_the_replications(task: EmptyTask, seed: Val) -> None:
    index = Val(int, name="i")
    method = Replication(evaluation=task, seed=seed, sample=3, index=index, distribution_seed=1)
    points = list(method.points())
    assert [p[1] for p in points] == [0, 1, 2]
    assert method.sampling.vals == (seed, index)


def test_direct_sampling_needs_a_sampling(task: EmptyTask, seed: Val) -> None:
    for bad, kind in (([1, 2], "list"), (seed, "Val"), (range(3), "range")):
        with pytest.raises(WorkflowError) as info:
            DirectSampling(evaluation=task, sampling=bad)  # type: ignore[arg-type]
        assert str(info.value) == (
            "DirectSampling needs a sampling such as x.in_(...) or x.in_(...) * y.in_(...), "
            f"got a `{kind}`"
        )


def test_direct_sampling_with_a_non_sampling_in_a_script_names_the_line(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        "x = Val(float)\nt = EmptyTask(inputs=[x])\nDirectSampling(evaluation=t, sampling=[1.0])\n",
    )
    assert str(error).startswith("pi.oms, line 3: DirectSampling needs a sampling")
    assert error.lineno == 3


def test_direct_sampling_needs_a_workflow_to_evaluate(seed: Val) -> None:
    with pytest.raises(WorkflowError) as info:
        DirectSampling(evaluation=3, sampling=seed.in_([1]))
    assert str(info.value) == "expected a task, a method or a puzzle, got a `int`"


def test_direct_sampling_condition_is_a_function_or_an_expression(
    task: EmptyTask, seed: Val
) -> None:
    with pytest.raises(WorkflowError) as info:
        DirectSampling(evaluation=task, sampling=seed.in_([1]), condition=3)  # type: ignore[arg-type]
    assert str(info.value) == (
        "condition takes a function of the results or an expression such as 'pi > 3', got a `int`"
    )


def test_direct_sampling_takes_a_single_aggregation(task: EmptyTask, seed: Val) -> None:
    method = DirectSampling(evaluation=task, sampling=seed.in_([1, 2]), aggregation=seed)
    assert method.size() == 2
    assert list(method.provides({})) == ["seed"]
