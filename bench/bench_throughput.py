"""Throughput: a 20,000-point DirectSampling of a trivial PythonTask, submit to finished.

Why: the engine's promise is that a sweep of tiny jobs costs about what the
work costs, not one Dask task (a few milliseconds of scheduler round trip)
per point. So the engine is timed against its two natural peers, in the same
run on the same machine:

* raw Dask, ``client.gather(client.map(f, range(n)))``: one Dask task per
  point, what a user gets without the engine's chunking. The engine should be
  at least 10 times faster (target ``raw Client.map / engine >= 10``);
* ``concurrent.futures.ProcessPoolExecutor(2).map(f, range(n), chunksize=c)``,
  pool start included, with the best of a few chunk sizes: the floor for
  "run a Python function on every point on 2 cores". The engine, which also
  type-checks, counts and reports every job, should stay within 5 times of it
  (target ``engine / ProcessPoolExecutor best <= 5``).

The engine is measured with its shared LocalCluster already started (median
and min of ``--repeat`` runs); one cold run, cluster start included, is
reported too. This is a report, not a test: it prints PASS/FAIL against the
targets and always exits 0.

Run: ``.venv/bin/python bench/bench_throughput.py [--points N] [--repeat N] [--quick]``
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import dask
import distributed
import psutil

from jupyter_mole.engine import Engine, State
from jupyter_mole.engine.dsl import DirectSampling, LocalEnvironment, PythonTask, Val

N_WORKERS = 2
CHUNKSIZES = (100, 500, 2000, 10000)
QUICK_RAW_POINTS = 2000
TARGET_RAW_OVER_ENGINE = 10.0
TARGET_ENGINE_OVER_POOL = 5.0

x = Val(int, name="x")
y = Val(int, name="y")


@PythonTask(inputs=[x], outputs=[y])
def double(x: int) -> dict[str, int]:
    return {"y": x * 2}


def double_fn(x: int) -> int:
    """The same trivial work as ``double``, as a plain function for the peers."""
    return x * 2


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


# -- the engine -------------------------------------------------------------------
def _engine_run(engine: Engine, work: Path, points: int) -> float:
    """Seconds from ``engine.start`` to ``wait()`` returning; fails loudly on a wrong result."""
    workflow = DirectSampling(
        evaluation=double.on(LocalEnvironment(N_WORKERS)), sampling=x.in_(range(points))
    )
    work.mkdir(parents=True)
    start = time.perf_counter()
    execution = engine.start(workflow, work)
    state = execution.wait()
    seconds = time.perf_counter() - start
    snapshot = execution.snapshot()
    if state is not State.FINISHED or snapshot.completed != points:
        raise SystemExit(
            f"engine run failed: state={state}, completed={snapshot.completed} of {points}, "
            f"error={snapshot.error}"
        )
    return seconds


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def bench_engine(
    points: int, repeat: int, root: Path
) -> tuple[float, list[float], dict[str, float]]:
    """One cold run (cluster started by the execution), then ``repeat`` warm runs.

    Also where the warm runs' CPU went: this process (the engine's loop and the
    Dask scheduler) and each worker process, in seconds per run.
    """
    with Engine(root / "state", n_workers=N_WORKERS) as engine:
        cold = _engine_run(engine, root / "cold", points)
        engine.warm_up()
        me = psutil.Process()
        workers = [c for c in me.children(recursive=True) if "spawn_main" in " ".join(c.cmdline())]
        before = [_cpu_seconds(p) for p in [me, *workers]]
        warm = [_engine_run(engine, root / f"warm-{i}", points) for i in range(repeat)]
        after = [_cpu_seconds(p) for p in [me, *workers]]
    spent = [(b - a) / repeat for a, b in zip(before, after)]
    cpu = {"engine process": spent[0]}
    cpu.update((f"worker {i + 1}", s) for i, s in enumerate(spent[1:]))
    return cold, warm, cpu


# -- raw Dask ---------------------------------------------------------------------
def bench_raw_dask(points: int) -> float:
    """``client.gather(client.map(...))`` on a started LocalCluster whose workers ran a task."""
    with (
        distributed.LocalCluster(
            n_workers=N_WORKERS,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.submit(double_fn, -1, pure=False).result()  # workers warm, as the engine's are
        start = time.perf_counter()
        results = client.gather(client.map(double_fn, range(points)))
        seconds = time.perf_counter() - start
    if len(results) != points or results[-1] != 2 * (points - 1):
        raise SystemExit("raw Dask returned wrong results")
    return seconds


# -- ProcessPoolExecutor ------------------------------------------------------------
def _pool_run(points: int, chunksize: int) -> None:
    with ProcessPoolExecutor(N_WORKERS) as pool:
        results = list(pool.map(double_fn, range(points), chunksize=chunksize))
    if len(results) != points:
        raise SystemExit("ProcessPoolExecutor returned wrong results")


def bench_pool(points: int, repeat: int) -> dict[int, list[float]]:
    """Pool start included, ``repeat`` runs for each chunk size."""
    return {
        c: [_timed(lambda c=c: _pool_run(points, c)) for _ in range(repeat)] for c in CHUNKSIZES
    }


# -- report -----------------------------------------------------------------------
def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in [rows[0], tuple("-" * w for w in widths), *rows[1:]]:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


def _load() -> str:
    """The load average, so that a run disturbed by other work shows it."""
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20_000, help="points of the sampling")
    parser.add_argument("--repeat", type=int, default=5, help="warm engine and pool runs")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"raw Dask on {QUICK_RAW_POINTS} points only, scaled linearly (smoke run)",
    )
    args = parser.parse_args(argv)
    points, repeat = args.points, args.repeat

    print(
        f"bench_throughput: {points} points, {repeat} repetitions, {N_WORKERS} workers; "
        f"Python {platform.python_version()}, dask {dask.__version__}, "
        f"distributed {distributed.__version__}, {multiprocessing.cpu_count()} cores, "
        f"multiprocessing start method {multiprocessing.get_start_method()}; "
        f"load average {_load()}",
        flush=True,
    )

    # The pool goes first, while this process has no threads (its default start method forks).
    print("ProcessPoolExecutor ...", flush=True)
    pool = bench_pool(points, repeat)

    print("engine ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        cold, warm, cpu = bench_engine(points, repeat, Path(tmp))

    raw_points = min(points, QUICK_RAW_POINTS) if args.quick else points
    print(f"raw Dask Client.map on {raw_points} points ...", flush=True)
    raw_measured = bench_raw_dask(raw_points)
    raw = raw_measured * points / raw_points

    engine_median = statistics.median(warm)
    best_chunk = min(pool, key=lambda c: statistics.median(pool[c]))
    pool_best = statistics.median(pool[best_chunk])

    rows: list[tuple[str, ...]] = [
        (
            "engine, warm cluster",
            f"{engine_median:.3f}",
            f"{min(warm):.3f}",
            f"{repeat} runs: " + ", ".join(f"{s:.3f}" for s in warm),
        ),
        ("engine, cold (cluster start included)", f"{cold:.3f}", "", "1 run"),
    ]
    for c, times in pool.items():
        mark = " (best)" if c == best_chunk else ""
        rows.append(
            (
                f"ProcessPoolExecutor(2), chunksize={c}{mark}",
                f"{statistics.median(times):.3f}",
                f"{min(times):.3f}",
                f"{repeat} runs, pool start included",
            )
        )
    raw_note = "1 run, warm cluster"
    if raw_points != points:
        raw_note = (
            f"measured {raw_measured:.3f} s on {raw_points} points, scaled x{points / raw_points:g}"
        )
    rows.append(("raw Dask client.map + gather", f"{raw:.3f}", "", raw_note))

    raw_ratio = raw / engine_median
    pool_ratio = engine_median / pool_best
    ratios: list[tuple[str, ...]] = [
        ("ratio", "value", "target", "verdict", "notes"),
        (
            "raw Client.map / engine",
            f"{raw_ratio:.1f}",
            f">= {TARGET_RAW_OVER_ENGINE:g}",
            _verdict(raw_ratio >= TARGET_RAW_OVER_ENGINE),
            "raw Dask scaled from a --quick run" if raw_points != points else "",
        ),
        (
            "engine / ProcessPoolExecutor best",
            f"{pool_ratio:.2f}",
            f"<= {TARGET_ENGINE_OVER_POOL:g}",
            _verdict(pool_ratio <= TARGET_ENGINE_OVER_POOL),
            f"best chunksize {best_chunk}",
        ),
    ]
    print()
    print(f"{points} points of a trivial task on {N_WORKERS} local workers, seconds")
    _table([("peer", "median", "min", "notes"), *rows])
    print()
    _table(ratios)
    print()
    print(
        f"engine throughput: {points / engine_median:,.0f} jobs/s warm; "
        f"raw Dask {points / raw:,.0f} tasks/s"
    )
    print(
        "engine CPU per warm run (s): "
        + ", ".join(f"{name} {seconds:.3f}" for name, seconds in cpu.items())
        + f"; wall {engine_median:.3f}"
    )
    print(f"load average at the end (1, 5, 15 min): {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
