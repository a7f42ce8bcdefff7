"""Workflows run for real on the engine's Dask LocalCluster: results, counters, hooks, output."""

from __future__ import annotations

import csv
import itertools
import math
import statistics
import textwrap
from pathlib import Path

import pytest

from jupyter_mole.engine import Engine, Execution, State, WorkflowError, load_source
from jupyter_mole.engine.dsl import PythonTask, Val


def start(engine: Engine, source: str, work: Path, name: str = "test.oms") -> Execution:
    script = work / name
    script.write_text(textwrap.dedent(source))
    loaded = load_source(script.read_text(), str(script), work)
    return engine.start(loaded.workflow, work, script=str(script))


def run(engine: Engine, source: str, work: Path, timeout: float = 120) -> Execution:
    execution = start(engine, source, work)
    execution.wait(timeout)
    assert execution.done, "the execution did not end in time"
    return execution


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_pi_replication_aggregates_and_hooks(engine: Engine, work: Path) -> None:
    source = (Path(__file__).parent.parent / "notebooks" / "pi.oms").read_text()
    execution = run(engine, source, work)
    assert execution.state is State.FINISHED, execution.error
    snapshot = execution.snapshot()
    assert snapshot.capsules["model"].completed == 100
    assert snapshot.ready == snapshot.running == 0
    (env,) = snapshot.environments
    assert env.name == "local" and env.done >= 1 and env.failed == 0
    rows = read_csv(work / "result.csv")
    assert len(rows) == 1 and set(rows[0]) == {"pi_avg", "pi_med"}
    assert abs(float(rows[0]["pi_avg"]) - math.pi) < 0.05
    text, _ = execution.output()
    header, line = text.strip().splitlines()
    assert header.split() == ["pi_avg", "pi_med"]
    assert float(line.split()[0]) == float(rows[0]["pi_avg"])


def test_direct_sampling_cross_product_rows_hold_factors_and_outputs(
    engine: Engine, work: Path
) -> None:
    execution = run(
        engine,
        """
        x, y, z = Val(float), Val(int), Val(float)

        @PythonTask(inputs=[x, y], outputs=[z])
        def model(x, y):
            return {"z": x * 10 + y}

        DirectSampling(
            evaluation=model,
            sampling=x.in_(0.0, 1.0, by=0.1) * y.in_([1, 2, 3]),
        ).hook(work_directory / "out" / "results.csv")
        """,
        work,
    )
    assert execution.state is State.FINISHED, execution.error
    rows = read_csv(work / "out" / "results.csv")
    assert list(rows[0]) == ["x", "y", "z"]
    got = {(r["x"], r["y"]): float(r["z"]) for r in rows}
    assert len(rows) == 33 == len(got)
    assert got[("0.3", "2")] == pytest.approx(5.0)
    assert {r["x"] for r in rows} == {repr(i / 10) for i in range(11)}
    assert execution.snapshot().completed == 33


def test_aggregation_is_in_sample_order_per_point_of_an_enclosing_sweep(
    engine: Engine, work: Path
) -> None:
    execution = run(
        engine,
        """
        import statistics
        x, i, y = Val(int), Val(int), Val(int)
        ys, y_sd = Val(list[int]), Val(float)

        @PythonTask(inputs=[x, i], outputs=[y])
        def model(x, i):
            return {"y": x * 1000 + i}

        DirectSampling(
            evaluation=DirectSampling(
                evaluation=model,
                sampling=i.in_(range(200)),
                aggregation=[y.evaluate(list).as_(ys), y.evaluate(statistics.stdev).as_(y_sd)],
            ),
            sampling=x.in_([1, 2, 3]),
        ).hook(work_directory / "agg.csv")
        """,
        work,
    )
    assert execution.state is State.FINISHED, execution.error
    rows = {int(r["x"]): r for r in read_csv(work / "agg.csv")}
    assert sorted(rows) == [1, 2, 3]
    for x, row in rows.items():
        assert eval(row["ys"]) == [x * 1000 + i for i in range(200)]
        assert float(row["y_sd"]) == pytest.approx(statistics.stdev(range(200)))


def test_condition_filters_hooked_and_aggregated_results(engine: Engine, work: Path) -> None:
    execution = run(
        engine,
        """
        x, y, total = Val(int), Val(int), Val(int)

        @PythonTask(inputs=[x], outputs=[y])
        def square(x):
            return x * x

        DirectSampling(
            evaluation=square,
            sampling=x.in_(range(10)),
            aggregation=[y.evaluate(sum).as_(total)],
            condition="y % 2 == 0",
        ).hook(display)
        """,
        work,
    )
    assert execution.state is State.FINISHED, execution.error
    lines = execution.output()[0].split()
    assert lines == ["total", str(sum(x * x for x in range(10) if x % 2 == 0))]


def test_sequence_passes_outputs_and_hooks_each_task(engine: Engine, work: Path) -> None:
    execution = run(
        engine,
        """
        x, y, z = Val(int), Val(int), Val(int)
        add = PythonTask("y = x + 1", inputs=[x], outputs=[y])
        double = PythonTask("z = 2 * y", inputs=[y], outputs=[z])
        DirectSampling(
            evaluation=add >> double.hook(work_directory / "z.csv"),
            sampling=x.in_([1, 2, 3]),
        ).hook(work_directory / "rows.csv")
        """,
        work,
    )
    assert execution.state is State.FINISHED, execution.error
    assert sorted(int(r["z"]) for r in read_csv(work / "z.csv")) == [4, 6, 8]
    rows = read_csv(work / "rows.csv")
    assert list(rows[0]) == ["x", "z"]
    assert sorted((int(r["x"]), int(r["z"])) for r in rows) == [(1, 4), (2, 6), (3, 8)]
    counts = execution.snapshot().capsules
    assert counts["add"].completed == counts["double"].completed == 3


def test_functions_with_closures_and_imports_travel_to_workers(engine: Engine, work: Path) -> None:
    execution = run(
        engine,
        """
        x, y = Val(float), Val(float)

        def scaled(k):
            def inner(v):
                import math
                return math.sqrt(v) * k
            return inner

        f = scaled(3.0)

        @PythonTask(inputs=[x], outputs=[y])
        def model(x):
            from statistics import fmean
            return fmean([f(x), f(x)])

        DirectSampling(evaluation=model, sampling=x.in_([4.0, 9.0])).hook(work_directory / "r.csv")
        """,
        work,
    )
    assert execution.state is State.FINISHED, execution.error
    assert sorted(float(r["y"]) for r in read_csv(work / "r.csv")) == [6.0, 9.0]


def test_by_groups_jobs_into_environment_jobs(engine: Engine, work: Path) -> None:
    execution = run(
        engine,
        """
        x, y = Val(int), Val(int)
        t = PythonTask("y = x", inputs=[x], outputs=[y])
        DirectSampling(evaluation=t.by(10), sampling=x.in_(range(95)))
        """,
        work,
    )
    assert execution.state is State.FINISHED, execution.error
    snapshot = execution.snapshot()
    assert snapshot.completed == 95
    assert snapshot.environments[0].done == 10  # 9 groups of 10 and one of 5


def test_task_printing_goes_to_its_execution_only(engine: Engine, tmp_path: Path) -> None:
    works = []
    executions = []
    for name in ("alpha", "beta"):
        work = tmp_path / name
        work.mkdir()
        works.append(work)
        executions.append(
            start(
                engine,
                f"""
                import time
                x = Val(int)

                @PythonTask(inputs=[x])
                def talk(x):
                    time.sleep(0.01)
                    print("{name}", x)

                DirectSampling(evaluation=talk, sampling=x.in_(range(20)))
                """,
                work,
            )
        )
    for name, execution in zip(("alpha", "beta"), executions):
        assert execution.wait(60) is State.FINISHED, execution.error
        lines = execution.output()[0].splitlines()
        assert sorted(lines) == sorted(f"{name} {i}" for i in range(20))


def test_output_reads_from_an_offset(engine: Engine, work: Path) -> None:
    execution = run(
        engine,
        """
        x = Val(int)
        DirectSampling(evaluation=PythonTask("print('line', x)", inputs=[x]), sampling=x.in_(range(5)))
        """,
        work,
    )
    whole, end = execution.output()
    assert len(whole.splitlines()) == 5
    first, middle = execution.output(0, 7)
    assert first == whole[:7]
    rest, final = execution.output(middle)
    assert first + rest == whole and final == end
    assert execution.output(end) == ("", end)


def test_local_environment_caps_concurrent_jobs(engine: Engine, tmp_path: Path) -> None:
    def overlaps(n: int) -> bool:
        work = tmp_path / f"cap{n}"
        work.mkdir()
        execution = run(
            engine,
            f"""
            import time
            x, begin, end = Val(int), Val(float), Val(float)

            @PythonTask(inputs=[x], outputs=[begin, end])
            def slow(x):
                b = time.time()
                time.sleep(0.3)
                return b, time.time()

            DirectSampling(
                evaluation=slow.on(LocalEnvironment({n})).by(1), sampling=x.in_(range(4))
            ).hook(work_directory / "t.csv")
            """,
            work,
        )
        assert execution.state is State.FINISHED, execution.error
        spans = sorted((float(r["begin"]), float(r["end"])) for r in read_csv(work / "t.csv"))
        return any(b2 < e1 for (_, e1), (b2, _) in itertools.pairwise(spans))

    assert not overlaps(1)
    assert overlaps(2)


def test_invalid_workflow_is_refused_before_it_starts(engine: Engine, work: Path) -> None:
    x, y = Val(int, name="x"), Val(int, name="y")
    task = PythonTask("y = x", inputs=[x], outputs=[y], name="needs_x")
    before = set(engine.executions)
    with pytest.raises(WorkflowError, match=r"task needs_x needs input x \(int\)"):
        engine.start(task, work)
    assert set(engine.executions) == before


def test_a_module_beside_the_script_is_importable_and_reaches_the_workers(
    engine: Engine, work: Path
) -> None:
    (work / "mymodel.py").write_text("def simulate(x):\n    return x ** 2 + 1\n")
    execution = run(
        engine,
        """
        from mymodel import simulate
        x, y = Val(int), Val(int)
        model = PythonTask(simulate, inputs=[x], outputs=[y])
        DirectSampling(evaluation=model, sampling=x.in_([1, 2, 3])).hook(work_directory / "r.csv")
        """,
        work,
    )
    assert execution.state is State.FINISHED, execution.error
    assert sorted(int(r["y"]) for r in read_csv(work / "r.csv")) == [2, 5, 10]
