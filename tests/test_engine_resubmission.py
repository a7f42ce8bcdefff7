"""Jobs lost with their worker: resubmitted up to ``max_resubmissions``, and only when at fault.

The tasks here kill their own worker process (SIGKILL), as a segfaulting
model or the kernel's OOM killer would; the LocalCluster's nanny starts a new
worker each time.
"""

from __future__ import annotations

from pathlib import Path

from jupyter_mole.engine import Engine, State
from jupyter_mole.engine.state import ErrorLevel

from .test_execution import run


def test_a_job_that_kills_every_worker_fails_after_max_resubmissions(
    engine: Engine, work: Path
) -> None:
    execution = run(
        engine,
        """
        import os, signal, time
        x = Val(int)

        @PythonTask(inputs=[x])
        def deadly(x):
            with open(work_directory / "attempts", "a") as f:
                f.write("attempt\\n")
            time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGKILL)

        DirectSampling(
            evaluation=deadly.by(1).on(LocalEnvironment(max_resubmissions=2)),
            sampling=x.in_([7]),
        )
        """,
        work,
        timeout=180,
    )
    assert execution.state is State.FAILED
    assert (work / "attempts").read_text().count("attempt") == 3  # the first run, then 2 more
    assert execution.error is not None
    assert "lost with their worker 3 times, more than max_resubmissions=2" in execution.error
    assert execution.failed_task == "deadly"
    errors = execution.errors()
    warnings = [e for e in errors if e.level is ErrorLevel.WARNING]
    assert sum(w.count for w in warnings) == 2
    assert sorted("(1/2)" in w.message for w in warnings) == [False, True]
    assert all("resubmitted" in w.message for w in warnings)
    severe = [e for e in errors if e.level is ErrorLevel.SEVERE]
    assert len(severe) == 1 and "max_resubmissions=2" in severe[0].message
    assert execution.snapshot().environments[0].failed == 3


def test_jobs_queued_on_a_dying_worker_are_not_charged_for_its_death(tmp_path: Path) -> None:
    """With one worker, a job waits queued on it while the other runs; both kill it, once each.

    Dask fails the queued job too (``KilledWorker``). Charged for that, each job
    would be lost twice (once queued behind the other, once by its own hand),
    more than ``max_resubmissions=1``; each is at fault only once.
    """
    work = tmp_path / "work"
    work.mkdir()
    with Engine(tmp_path / "state", n_workers=1) as engine:
        execution = run(
            engine,
            """
            import os, signal, time
            x, y = Val(int), Val(int)

            @PythonTask(inputs=[x], outputs=[y])
            def once(x):
                mark = work_directory / f"killed-{x}"
                if not mark.exists():
                    mark.touch()
                    time.sleep(0.5)
                    os.kill(os.getpid(), signal.SIGKILL)
                return {"y": x + 10}

            DirectSampling(
                evaluation=once.by(1).on(LocalEnvironment(max_resubmissions=1)),
                sampling=x.in_([1, 2]),
            ).hook(work_directory / "r.csv")
            """,
            work,
            timeout=180,
        )
    assert execution.state is State.FINISHED, execution.error
    assert (work / "killed-1").exists() and (work / "killed-2").exists()
    assert sorted((work / "r.csv").read_text().split()[1:]) == ["1,11", "2,12"]
    warnings = [e for e in execution.errors() if e.level is ErrorLevel.WARNING]
    assert sum(w.count for w in warnings) == 2  # one per death, none for the queued job
    assert all("(1/1)" in w.message for w in warnings)
