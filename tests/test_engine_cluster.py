"""The engine's LocalCluster: started by the first execution that needs it, then shared."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import psutil

from jupyter_mole.engine import Engine, Execution, State, load_script

from .test_execution import read_csv

PIDS = """
import os, time
x, pid = Val(int), Val(int)

@PythonTask(inputs=[x], outputs=[pid])
def where(x):
    time.sleep(0.2)
    return {"pid": os.getpid()}

DirectSampling(evaluation=where.by(1), sampling=x.in_(range(6))).hook(work_directory / "pids.csv")
"""


def _dask_workers() -> set[int]:
    """The Dask worker processes under this test process (spawned by the nannies)."""
    found = set()
    for process in psutil.Process().children(recursive=True):
        try:
            if any("spawn_main" in part for part in process.cmdline()):
                found.add(process.pid)
        except psutil.Error:
            pass
    return found


def _engine_workers(engine: Engine) -> set[int]:
    """The pids of this engine's own workers, as its cluster tells them."""
    ask = asyncio.run_coroutine_threadsafe(engine.cluster.worker_pids(), engine._loop)
    return set(ask.result(60).values())


def _start(engine: Engine, folder: Path) -> Execution:
    folder.mkdir()
    script = folder / "pids.oms"
    script.write_text(textwrap.dedent(PIDS))
    return engine.start(load_script(script).workflow, folder, script=str(script))


def _pids(execution: Execution, folder: Path) -> set[int]:
    assert execution.wait(120) is State.FINISHED, execution.error
    return {int(row["pid"]) for row in read_csv(folder / "pids.csv")}


def test_the_local_cluster_starts_with_the_first_execution_and_is_shared(tmp_path: Path) -> None:
    before = _dask_workers()
    with Engine(tmp_path / "state", n_workers=2) as engine:
        loaded = tmp_path / "loaded"
        loaded.mkdir()
        (loaded / "pids.oms").write_text(textwrap.dedent(PIDS))
        load_script(loaded / "pids.oms")
        assert not engine.cluster.started
        assert _dask_workers() == before, "creating an engine or loading a script started workers"
        assert not (tmp_path / "state" / "dask").exists()

        assert _engine_workers(engine) == set()

        first = _pids(_start(engine, tmp_path / "first"), tmp_path / "first")
        assert engine.cluster.started
        workers = _engine_workers(engine)
        assert 1 <= len(workers) <= 2
        assert first <= workers
        assert workers <= _dask_workers() - before  # processes of this machine, started now

        second = _pids(_start(engine, tmp_path / "second"), tmp_path / "second")
        both = [_start(engine, tmp_path / name) for name in ("third", "fourth")]
        together = _pids(both[0], tmp_path / "third") | _pids(both[1], tmp_path / "fourth")
        assert second | together <= workers, "an execution started workers of its own"
        assert _engine_workers(engine) == workers
