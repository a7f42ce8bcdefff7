"""Hooks in real executions: display, CSV (all values or chosen ones), copying output files."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from jupyter_mole.engine import Engine, State
from tests.test_execution import run


def test_system_exec_model_with_resources_output_files_and_copy_hook(
    engine: Engine, work: Path
) -> None:
    (work / "model.py").write_text(
        "import sys\n"
        "a, b = float(sys.argv[1]), float(sys.argv[2])\n"
        "open('result.txt', 'w').write(str(a * b))\n"
        "print('computed', a * b)\n"
    )
    execution = run(
        engine,
        f"""
        a, b, result, log = Val(float), Val(float), Val(File), Val(str)
        model = SystemExecTask(
            "{sys.executable} model.py ${{a}} ${{b}}",
            inputs=[a, b],
            outputs=[a, b],
            resources=["model.py"],
            output_files={{"result.txt": result}},
            stdout=log,
        )
        DirectSampling(
            evaluation=model.hook(CopyFileHook(result, work_directory / "results" / "r_${{a}}_${{b}}.txt")),
            sampling=a.in_([1.0, 2.0]) * b.in_([10.0, 20.0]),
        ).hook(CSVHook(work_directory / "table.csv", values=[a, b, log]))
        """,
        work,
    )
    assert execution.state is State.FINISHED, execution.error
    copied = {p.name: p.read_text() for p in (work / "results").iterdir()}
    assert copied == {
        "r_1.0_10.0.txt": "10.0",
        "r_1.0_20.0.txt": "20.0",
        "r_2.0_10.0.txt": "20.0",
        "r_2.0_20.0.txt": "40.0",
    }
    with open(work / "table.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["a", "b", "log"]
    assert sorted(rows[1:]) == sorted(
        [[str(a), str(b), f"computed {a * b}\n"] for a in (1.0, 2.0) for b in (10.0, 20.0)]
    )
    # The job folders are gone once the execution ends; the work directory keeps the results.
    assert not any(Path(p).exists() for p in [execution.context.scratch_directory])


def test_display_with_chosen_values_prints_a_header_once(engine: Engine, work: Path) -> None:
    execution = run(
        engine,
        """
        x, y, z = Val(int), Val(int), Val(int)
        t = PythonTask("y = x + 1\\nz = x * 100", inputs=[x], outputs=[y, z])
        DirectSampling(evaluation=t, sampling=x.in_(range(30))).hook(display(z, x))
        """,
        work,
    )
    assert execution.state is State.FINISHED, execution.error
    lines = execution.output()[0].splitlines()
    assert lines[0].split() == ["z", "x"]
    assert sorted(tuple(map(int, line.split())) for line in lines[1:]) == [
        (x * 100, x) for x in range(30)
    ]


def test_csv_rows_are_written_as_they_come(engine: Engine, work: Path) -> None:
    source = """
        import time
        x = Val(int)

        @PythonTask(inputs=[x], outputs=[x])
        def slow(x):
            if x == 4:
                seen = (work_directory / "rows.csv").read_text().splitlines()
                (work_directory / "seen.txt").write_text(str(len(seen)))
            time.sleep(0.05)
            return x

        DirectSampling(
            evaluation=slow.on(LocalEnvironment(1)).by(1), sampling=x.in_(range(5))
        ).hook(work_directory / "rows.csv")
        """
    execution = run(engine, source, work)
    assert execution.state is State.FINISHED, execution.error
    # When the fifth job ran, the rows of earlier jobs were already in the file.
    assert int((work / "seen.txt").read_text()) >= 3


def test_a_run_without_rows_replaces_the_last_runs_csv_files(engine: Engine, work: Path) -> None:
    for name in ("all.csv", "chosen.csv", "nested/chosen.csv"):
        (work / name).parent.mkdir(exist_ok=True)
        (work / name).write_text("x,y\n1,1\n2,2\n")
    source = """
        x, y = Val(int), Val(int)
        t = PythonTask("y = x", inputs=[x], outputs=[y])
        DirectSampling(evaluation=t, sampling=x.in_([1, 2]), condition="y > 5").hook(
            work_directory / "all.csv",
            CSVHook(work_directory / "chosen.csv", values=[y, x]),
            CSVHook(work_directory / "nested" / "chosen.csv", values=[y], header=False),
        )
        """
    execution = run(engine, source, work)
    assert execution.state is State.FINISHED, execution.error
    # No row passed the condition: no stale rows either, and the header where it is known.
    assert (work / "all.csv").read_text() == ""
    assert (work / "chosen.csv").read_text() == "y,x\n"
    assert (work / "nested" / "chosen.csv").read_text() == ""


def test_a_csv_file_that_cannot_be_written_fails_the_execution_at_once(
    engine: Engine, work: Path
) -> None:
    (work / "taken").write_text("a file, not a folder")
    source = """
        x = Val(int)
        DirectSampling(evaluation=EmptyTask(inputs=[x]), sampling=x.in_([1])).hook(
            work_directory / "taken" / "r.csv"
        )
        """
    execution = run(engine, source, work)
    assert execution.state is State.FAILED
    assert execution.error == (
        f"the CSV hook cannot write {work / 'taken' / 'r.csv'} (File exists: {work / 'taken'})"
    )
    assert execution.snapshot().completed == 0  # before any job
