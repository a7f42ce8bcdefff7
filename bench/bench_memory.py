"""Memory and first-job latency: a 1,000,000-point DirectSampling with a CSV hook.

Why: the engine draws points from the sampling lazily, a batch at a time, and
streams result rows to the hooks as batches finish, so a million-point sweep
should not hold a million rows (or a million Dask tasks) in the engine
process. Targets: the engine process peaks under 400 MB of RSS, and the first
job is running within 1 s of ``engine.start``, even on a cold engine whose
LocalCluster is started by that very execution.

Each measurement runs in a fresh child process, so the peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``) is that process's own; the Dask
scheduler lives in it, the workers are separate processes (their peak, VmHWM,
is reported apart). The peer is the same child doing the same set-up with
100 points, so the difference is what the million points cost.

The 1M child: a cold execution (no ``warm_up``; the execution starts the
cluster), then ``warm_up()`` and a second, warm execution; first-job latency
is the time from ``engine.start`` until ``snapshot()`` shows a running or
completed job, polled every 2 ms. Both CSV files are checked for 1,000,001
lines. Cold start varies a lot from one process to the next (it is mostly the
workers' start), so ``--cold-repeat`` more fresh children time only the cold
first job and cancel; the median of all cold figures is the one judged. This is a report: it prints PASS/FAIL and always exits 0.

Run: ``.venv/bin/python bench/bench_memory.py [--side N] [--cold-repeat N]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dask
import distributed
import psutil

from jupyter_mole.engine import Engine, Execution, State
from jupyter_mole.engine.dsl import DirectSampling, LocalEnvironment, PythonTask, Val

N_WORKERS = 2
POLL_SECONDS = 0.002
PEER_SIDE = 10  # 10 x 10 = 100 points
TARGET_RSS_MB = 400.0
TARGET_FIRST_JOB_S = 1.0
RESULT_PREFIX = "RESULT "

x = Val(int, name="x")
y = Val(int, name="y")
z = Val(int, name="z")


@PythonTask(inputs=[x, y], outputs=[z])
def add(x: int, y: int) -> dict[str, int]:
    return {"z": x + y}


def _workflow(side: int, work: Path) -> DirectSampling:
    sampling = x.in_(range(side)) * y.in_(range(side))
    return DirectSampling(evaluation=add.on(LocalEnvironment(N_WORKERS)), sampling=sampling).hook(
        work / "results.csv"
    )


def _lines(path: Path) -> int:
    count = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            count += block.count(b"\n")
    return count


def _run(engine: Engine, side: int, work: Path, *, first_only: bool = False) -> dict[str, float]:
    """One execution: first-job latency, total time; fails loudly on a wrong result.

    With ``first_only``, the execution is cancelled once its first job is seen.
    """
    work.mkdir(parents=True)
    workflow = _workflow(side, work)
    start = time.perf_counter()
    execution: Execution = engine.start(workflow, work)
    first = float("nan")
    while not execution.done:
        snapshot = execution.snapshot()
        if snapshot.running + snapshot.completed > 0:
            first = time.perf_counter() - start
            break
        time.sleep(POLL_SECONDS)
    if first_only:
        execution.cancel()
        execution.wait()
        return {"first_job_s": first}
    state = execution.wait()
    total = time.perf_counter() - start
    if first != first:  # ended before a poll saw a job: its end bounds the latency
        first = total
    points = side * side
    snapshot = execution.snapshot()
    if state is not State.FINISHED or snapshot.completed != points:
        raise SystemExit(
            f"run failed: state={state}, completed={snapshot.completed} of {points}, "
            f"error={snapshot.error}"
        )
    lines = _lines(work / "results.csv")
    if lines != points + 1:
        raise SystemExit(f"results.csv has {lines} lines, expected {points + 1}")
    return {"first_job_s": first, "total_s": total, "csv_lines": lines}


def _peak_mb_of(pid: int) -> float | None:
    """A process's peak RSS (VmHWM) in MB, from /proc; None where that is not readable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _workers_peak_mb() -> list[float]:
    """Peak RSS of this process's descendants that are Dask workers (the engine must be open)."""
    peaks = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "multiprocessing" in cmdline and "resource_tracker" in cmdline:
            continue
        peak = _peak_mb_of(child.pid)
        if peak is not None:
            peaks.append(peak)
    return peaks


def child(mode: str, side: int) -> None:
    """The measured process: prints one ``RESULT {json}`` line."""
    result: dict[str, Any] = {"mode": mode, "points": side * side}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        root = Path(tmp)
        with Engine(root / "state", n_workers=N_WORKERS) as engine:
            if mode == "peer":
                start = time.perf_counter()
                engine.warm_up()
                result["warm_up_s"] = time.perf_counter() - start
                result["warm"] = _run(engine, side, root / "work")
            elif mode == "cold":
                result["cold"] = _run(engine, side, root / "cold", first_only=True)
            else:
                result["cold"] = _run(engine, side, root / "cold")
                engine.warm_up()
                result["warm"] = _run(engine, side, root / "warm")
            result["workers_peak_mb"] = _workers_peak_mb()
        result["engine_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def _spawn(mode: str, side: int) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--side", str(side)],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise SystemExit(f"the {mode} child failed (exit {completed.returncode}):\n{completed.stdout}")


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    rows = [rows[0], tuple("-" * w for w in widths), *rows[1:]]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())


def _load() -> str:
    """The load average, so that a run disturbed by other work shows it."""
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--side",
        type=int,
        default=1000,
        help="points per axis of the cross product (side**2 in all)",
    )
    parser.add_argument(
        "--cold-repeat",
        type=int,
        default=4,
        help="extra fresh children that only time the cold first job (then cancel)",
    )
    parser.add_argument("--child", choices=("big", "peer", "cold"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, PEER_SIDE if args.child == "peer" else args.side)
        return 0

    points = args.side**2
    print(
        f"bench_memory: {points:,} points (x.in_(range({args.side})) * y.in_(range({args.side}))) "
        f"with a CSV hook, {N_WORKERS} workers; Python {platform.python_version()}, "
        f"dask {dask.__version__}, distributed {distributed.__version__}, "
        f"{psutil.cpu_count()} cores; load average {_load()}",
        flush=True,
    )
    print(f"peer child ({PEER_SIDE * PEER_SIDE} points) ...", flush=True)
    peer = _spawn("peer", args.side)
    print(f"measured child ({points:,} points, cold then warm) ...", flush=True)
    big = _spawn("big", args.side)
    print(f"{args.cold_repeat} more cold children (first job only, then cancel) ...", flush=True)
    colds = [big["cold"]["first_job_s"]]
    colds += [_spawn("cold", args.side)["cold"]["first_job_s"] for _ in range(args.cold_repeat)]

    big_mb, peer_mb = big["engine_peak_mb"], peer["engine_peak_mb"]
    cold_first, warm_first = statistics.median(colds), big["warm"]["first_job_s"]
    rows: list[tuple[str, ...]] = [
        ("figure", f"{points:,} points", f"peer, {peer['points']} points", "target", "verdict"),
        (
            "engine process peak RSS (MB)",
            f"{big_mb:.0f}",
            f"{peer_mb:.0f}",
            f"< {TARGET_RSS_MB:.0f}",
            _verdict(big_mb < TARGET_RSS_MB),
        ),
        ("growth over the peer (MB)", f"{big_mb - peer_mb:+.0f}", "", "", ""),
        (
            "workers' peak RSS (MB, each)",
            ", ".join(f"{m:.0f}" for m in big["workers_peak_mb"]) or "n/a",
            ", ".join(f"{m:.0f}" for m in peer["workers_peak_mb"]) or "n/a",
            "",
            "",
        ),
        (
            f"first job, cold start (s, median of {len(colds)})",
            f"{cold_first:.3f} (min {min(colds):.3f}, max {max(colds):.3f})",
            "",
            f"< {TARGET_FIRST_JOB_S:g}",
            _verdict(cold_first < TARGET_FIRST_JOB_S),
        ),
        (
            "cluster start alone: warm_up() (s)",
            "",
            f"{peer['warm_up_s']:.3f}",
            "",
            "",
        ),
        (
            "first job, warm cluster (s)",
            f"{warm_first:.3f}",
            f"{peer['warm']['first_job_s']:.3f}",
            f"< {TARGET_FIRST_JOB_S:g}",
            _verdict(warm_first < TARGET_FIRST_JOB_S),
        ),
        (
            "total, cold start (s)",
            f"{big['cold']['total_s']:.2f}",
            "",
            "",
            "",
        ),
        (
            "total, warm cluster (s)",
            f"{big['warm']['total_s']:.2f}",
            f"{peer['warm']['total_s']:.3f}",
            "",
            "",
        ),
        (
            "results.csv lines (cold, warm)",
            f"{big['cold']['csv_lines']:,}, {big['warm']['csv_lines']:,}",
            f"{peer['warm']['csv_lines']}",
            f"{points + 1:,}",
            "ok",
        ),
    ]
    print()
    _table(rows)
    print()
    print(
        f"peak RSS, {points:,} points / peer = {big_mb / peer_mb:.2f}  "
        f"(growth {big_mb - peer_mb:+.0f} MB)"
    )
    print("cold first-job latencies (s): " + ", ".join(f"{c:.3f}" for c in colds))
    print(
        f"throughput with the CSV hook: {points / big['warm']['total_s']:,.0f} jobs/s warm, "
        f"{points / big['cold']['total_s']:,.0f} jobs/s cold"
    )
    print(f"load average at the end (1, 5, 15 min): {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
