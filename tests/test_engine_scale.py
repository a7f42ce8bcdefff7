"""Many points: jobs grouped into chunks without ``.by()``, and samplings never listed."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

from jupyter_mole.engine import Engine, State

from .test_execution import read_csv, run, start


def test_five_thousand_trivial_jobs_are_grouped_into_few_chunks(engine: Engine, work: Path) -> None:
    execution = run(
        engine,
        """
        x, y = Val(int), Val(int)

        @PythonTask(inputs=[x], outputs=[y])
        def twice(x):
            return {"y": 2 * x + 1}

        DirectSampling(
            evaluation=twice.on(LocalEnvironment()),
            sampling=x.in_(range(5000)),
        ).hook(work_directory / "r.csv")
        """,
        work,
        timeout=180,
    )
    assert execution.state is State.FINISHED, execution.error
    rows = read_csv(work / "r.csv")
    assert len(rows) == 5000
    assert {int(r["x"]): int(r["y"]) for r in rows} == {x: 2 * x + 1 for x in range(5000)}
    snapshot = execution.snapshot()
    assert snapshot.capsules["twice"].completed == 5000
    (environment,) = snapshot.environments
    # A chunk holds about a fifth of a second of work: a job of microseconds shares
    # its chunk with hundreds of others (5,000 one-job chunks without grouping).
    assert 1 <= environment.done <= 50, environment
    assert environment.failed == 0


def test_a_trillion_point_cross_product_starts_at_once_and_is_never_listed(
    engine: Engine, work: Path
) -> None:
    tracemalloc.start()
    try:
        began = time.time()
        execution = start(
            engine,
            """
            x, y = Val(int), Val(int)

            @PythonTask(inputs=[x, y])
            def model(x, y):
                pass

            DirectSampling(
                evaluation=model,
                sampling=x.in_(range(10**6)) * y.in_(range(10**6)),
            )
            """,
            work,
        )
        while execution.snapshot().completed < 1000:
            assert not execution.done, execution.error
            assert time.time() - began < 60, "no job of the sampling ran within a minute"
            time.sleep(0.05)
        first_results = time.time() - began
        execution.cancel()
        assert execution.wait(60) is State.CANCELLED
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first_results < 30
    # Listing even one factor (10**6 ints in a list) takes ~36 MB; the product, 10**12 rows.
    assert peak < 24 * 2**20, f"the engine held {peak / 2**20:.0f} MB while drawing points"
