"""What ``jupyter-mole run`` prints when a worker dies: one warning of ours, none of Dask's lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

KILLS_ITS_WORKER_ONCE = """
import os, signal, time
x, y = Val(int), Val(int)
mark = work_directory / "killed"

@PythonTask(inputs=[x], outputs=[y])
def deadly(x):
    if x == 2 and not mark.exists():
        mark.touch()
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    return {"y": x * 2}

DirectSampling(evaluation=deadly.by(1), sampling=x.in_(range(4))).hook(work_directory / "r.csv")
"""


def _run(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    (tmp_path / "deadly.oms").write_text(KILLS_ITS_WORKER_ONCE)
    return subprocess.run(
        [sys.executable, "-m", "jupyter_mole", "run", "deadly.oms", "--workers", "2", *flags],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_a_killed_worker_shows_as_one_warning_line_and_no_dask_log(tmp_path: Path) -> None:
    done = _run(tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "killed").exists(), "the worker was never killed"
    rows = sorted((tmp_path / "r.csv").read_text().split()[1:])
    assert rows == ["0,0", "1,2", "2,4", "3,6"]
    lines = done.stderr.splitlines()
    assert not [line for line in lines if "distributed." in line], done.stderr
    warnings = [line for line in lines if "WARNING" in line]
    assert len(warnings) == 1, done.stderr
    assert "lost with their worker" in warnings[0] and "resubmitted (1/3)" in warnings[0]
    assert "KilledWorker" not in done.stderr and "dask.org" not in done.stderr
    assert "finished: 4 jobs completed" in done.stdout
