"""SLURM: how soon the first job runs, and what a sweep of tiny jobs costs there.

Why: sending a workflow to a cluster must not make a modeller wait on us.
Two figures, each against a peer measured in the same run on the same
single-node SLURM (the tests' loopback one, started here):

* first job: from ``run_script`` of a one-point workflow on
  ``SLURMEnvironment`` to the job running on a worker (target under 5 s),
  beside the peer: a batch job that only imports ``distributed`` in the
  nodes' Python, from ``sbatch`` to its end, the floor for any Dask worker
  started by a batch job;
* a 2,000-point DirectSampling of a trivial task on ``SLURMEnvironment``
  with 2 single-core batch jobs, against the same on ``LocalEnvironment(2)``
  (target: within 2x). The cluster's part is timed from its first job
  running to the end, since getting workers is the first figure; the wall
  time from submission is printed too.

This is a report, not a test: it prints PASS/FAIL against the targets and
always exits 0.

Run: ``.venv/bin/python bench/bench_clusters.py [--repeat N] [--points N]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jupyter_mole.engine import Engine, State  # noqa: E402
from tests.batch_systems import slurm_cluster  # noqa: E402

TARGET_FIRST_JOB_SECONDS = 5.0
TARGET_SLURM_OVER_LOCAL = 2.0

SCRIPT = """
x, y = Val(int), Val(int)

@PythonTask(inputs=[x], outputs=[y])
def double(x):
    return {{"y": 2 * x}}

env = {environment}
DirectSampling(evaluation=double.on(env), sampling=x.in_(range({points})))
"""
SLURM = "SLURMEnvironment(partition='debug', max_jobs=2, interface='lo')"


def run(engine: Engine, folder: Path, environment: str, points: int) -> tuple[float, float]:
    """Seconds from submission to the first job running, and to the end."""
    script = folder / "bench.oms"
    script.write_text(SCRIPT.format(environment=environment, points=points))
    started = time.perf_counter()
    execution = engine.run_script(script)
    first = None
    while not execution.done:
        snapshot = execution.snapshot()
        if first is None and (snapshot.running or snapshot.completed):
            first = time.perf_counter() - started
        time.sleep(0.005)
    total = time.perf_counter() - started
    assert execution.state is State.FINISHED, execution.error
    return (first if first is not None else total), total


def sbatch_import_distributed() -> float:
    """The peer: SLURM running a job that starts the nodes' Python and imports distributed."""
    started = time.perf_counter()
    command = f"{sys.executable} -c 'import distributed'"
    out = subprocess.run(
        ["sbatch", "--parsable", "-p", "debug", "-o", "/dev/null", "--wrap", command],
        capture_output=True,
        text=True,
        check=True,
    )
    job = out.stdout.strip().split(";")[0]
    while True:
        state = subprocess.run(
            ["squeue", "-h", "-o", "%T", "-j", job], capture_output=True, text=True
        ).stdout.strip()
        if state in ("", "COMPLETED", "COMPLETING", "FAILED"):
            return time.perf_counter() - started
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--points", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, slurm_cluster() as slurm:
        os.environ.update(slurm.env)
        folder = Path(tmp)
        with Engine(folder / "state", n_workers=2) as engine:
            engine.warm_up()
            run(engine, folder, "LocalEnvironment(2)", 10)  # warm the local workers
            peers = [sbatch_import_distributed() for _ in range(args.repeat)]
            firsts = [run(engine, folder, SLURM, 1)[0] for _ in range(args.repeat)]
            local, slurm_runs = [], []
            for _ in range(args.repeat):
                local.append(run(engine, folder, "LocalEnvironment(2)", args.points)[1])
                slurm_runs.append(run(engine, folder, SLURM, args.points))
        first = statistics.median(firsts)
        peer = statistics.median(peers)
        print(f"SLURM here: {slurm.host}, {os.cpu_count()} cores, {args.repeat} runs each")
        print(f"first job running:      median {first:.2f} s (runs {_list(firsts)})")
        print(
            f"  peer, a batch job importing distributed: median {peer:.2f} s (runs {_list(peers)})"
        )
        print(f"  ratio first job / peer: {first / peer:.2f}")
        verdict = "PASS" if first < TARGET_FIRST_JOB_SECONDS else "FAIL"
        print(f"  target < {TARGET_FIRST_JOB_SECONDS:.0f} s: {verdict}")
        steady = [total - first_job for first_job, total in slurm_runs]
        walls = [total for _, total in slurm_runs]
        local_median = statistics.median(local)
        ratio = statistics.median(steady) / local_median
        print(f"{args.points} trivial jobs, LocalEnvironment(2): median {local_median:.3f} s")
        print(
            f"{args.points} trivial jobs, SLURM 2 jobs: median {statistics.median(steady):.3f} s "
            f"from first job running (wall from submission {statistics.median(walls):.2f} s)"
        )
        verdict = "PASS" if ratio <= TARGET_SLURM_OVER_LOCAL else "FAIL"
        print(
            f"  ratio SLURM / local: {ratio:.2f} (target <= {TARGET_SLURM_OVER_LOCAL:.0f}): {verdict}"
        )


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
