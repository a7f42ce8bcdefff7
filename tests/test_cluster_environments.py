"""Workflows on real clusters started by the tests: a Dask scheduler, SSH, SLURM and PBS.

The same script runs everywhere; only the environment line changes, which
is OpenMOLE's promise. The batch systems are Debian's SLURM (and its Torque
wrappers for PBS) on loopback, started by ``tests.batch_systems``.
"""

from __future__ import annotations

import csv
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from distributed import Client

from jupyter_mole.engine import Engine
from jupyter_mole.engine.execution import Execution
from jupyter_mole.engine.state import ErrorLevel, State

SWEEP = """
import time
x = Val(int)
y = Val(int)

@PythonTask(inputs=[x], outputs=[y])
def square(x):
    for _ in range(round({pause} * 10)):  # a model computing: cancel stops it between steps
        time.sleep(0.1)
    return {{"y": x * x}}

env = {environment}
DirectSampling(evaluation=square.on(env), sampling=x.in_(range({n}))).hook(
    work_directory / "result.csv"
)
"""


def start(engine: Engine, work: Path, environment: str, n: int = 20, pause: float = 0) -> Execution:
    script = work / "sweep.oms"
    script.write_text(SWEEP.format(environment=environment, n=n, pause=pause))
    return engine.run_script(script)


def finish(execution: Execution, timeout: float = 180) -> State:
    state = execution.wait(timeout)
    assert execution.done, f"still {state} after {timeout} s: {execution.snapshot()}"
    return state


def result(work: Path) -> dict[int, int]:
    """x -> y from result.csv; fails on a duplicated x, which a resubmission must never cause."""
    with (work / "result.csv").open() as f:
        rows = list(csv.DictReader(f))
    xs = [int(r["x"]) for r in rows]
    assert len(xs) == len(set(xs)), f"duplicated rows: {sorted(xs)}"
    return {int(r["x"]): int(r["y"]) for r in rows}


def messages(execution: Execution, level: ErrorLevel) -> list[str]:
    return [e.message for e in execution.errors() if e.level is level]


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def assert_settled(execution: Execution, name: str) -> None:
    (counts,) = [e for e in execution.snapshot().environments if e.name == name]
    assert (counts.submitted, counts.running) == (0, 0), counts
    assert counts.done >= 1, counts


# -- an existing Dask scheduler -----------------------------------------------------------
def test_dask_environment_runs_on_the_users_scheduler(
    engine: Engine, work: Path, dask_scheduler: Any
) -> None:
    execution = start(engine, work, f"DaskEnvironment({dask_scheduler.address!r})", n=40)
    assert finish(execution) is State.FINISHED, execution.error
    assert result(work) == {x: x * x for x in range(40)}
    assert_settled(execution, "env")
    with Client(dask_scheduler.address, timeout=10) as client:
        assert client.run(lambda dask_worker: "jupyter-mole" in dask_worker.plugins)


def test_cancel_on_a_dask_environment_stops_our_jobs_and_keeps_the_cluster(
    engine: Engine, work: Path, dask_scheduler: Any
) -> None:
    execution = start(engine, work, f"DaskEnvironment({dask_scheduler.address!r})", pause=30)
    wait_for(lambda: execution.snapshot().running > 0, 60, "a running job")
    execution.cancel()
    assert finish(execution, 60) is State.CANCELLED
    with Client(dask_scheduler.address, timeout=10) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        wait_for(
            lambda: not client.processing() or not any(client.processing().values()),
            20,
            "idle workers",
        )
        assert client.submit(sum, [1, 2], pure=False).result(timeout=20) == 3


def test_an_unreachable_scheduler_fails_the_execution_with_its_address(
    engine: Engine, work: Path
) -> None:
    execution = start(engine, work, "DaskEnvironment('127.0.0.1:9')", n=3)
    assert finish(execution, 60) is State.FAILED
    assert "tcp://127.0.0.1:9" in (execution.error or "")
    (severe,) = messages(execution, ErrorLevel.SEVERE)
    assert "cannot reach the Dask scheduler" in severe


# -- SSH ---------------------------------------------------------------------------------
def ssh_environment(sshd: Any, key: Path) -> str:
    return (
        f"SSHEnvironment({sshd.user!r}, {sshd.host!r}, 2, port={sshd.port}, key={str(key)!r}, "
        f"known_hosts={str(sshd.known_hosts)!r}, python={sshd.python!r}, name='ssh')"
    )


def test_ssh_environment_runs_workers_over_ssh(engine: Engine, work: Path, sshd: Any) -> None:
    execution = start(engine, work, ssh_environment(sshd, sshd.key), n=30)
    assert finish(execution) is State.FINISHED, execution.error
    assert result(work) == {x: x * x for x in range(30)}
    assert_settled(execution, "ssh")


def test_a_refused_ssh_key_is_a_severe_error(engine: Engine, work: Path, sshd: Any) -> None:
    execution = start(engine, work, ssh_environment(sshd, sshd.wrong_key), n=3)
    assert finish(execution, 90) is State.FAILED
    (severe,) = messages(execution, ErrorLevel.SEVERE)
    assert "SSH authentication" in severe and "refused" in severe
    assert f"{sshd.user}@{sshd.host}:{sshd.port}" in (execution.error or "")


# -- SLURM ------------------------------------------------------------------------------
def slurm_environment(partition: str = "debug", **more: Any) -> str:
    options = {"partition": partition, "max_jobs": 2, "interface": "lo", **more}
    return "SLURMEnvironment(" + ", ".join(f"{k}={v!r}" for k, v in options.items()) + ")"


def wait_empty_queue(slurm: Any, timeout: float = 30) -> None:
    wait_for(lambda: not slurm.squeue(), timeout, f"an empty SLURM queue (left: {slurm.squeue()})")


def test_slurm_environment_runs_a_sweep_with_the_same_results_as_local(
    engine: Engine, tmp_path: Path, slurm: Any
) -> None:
    results = {}
    for label, environment in (("local", "LocalEnvironment(2)"), ("slurm", slurm_environment())):
        work = tmp_path / label
        work.mkdir()
        execution = start(engine, work, environment, n=25, pause=0.05)
        assert finish(execution) is State.FINISHED, execution.error
        results[label] = result(work)
        assert_settled(execution, "env")
        assert execution.snapshot().capsules["square"].completed == 25
    assert results["slurm"] == results["local"] == {x: x * x for x in range(25)}
    wait_empty_queue(slurm)  # the execution's batch jobs are gone with it


def test_scancel_of_a_worker_job_is_a_warning_and_loses_nothing(
    engine: Engine, work: Path, slurm: Any
) -> None:
    execution = start(engine, work, slurm_environment(), n=16, pause=1)
    wait_for(lambda: execution.snapshot().completed >= 2, 120, "jobs completing on SLURM")
    victim = slurm.squeue()[0]
    subprocess.run(["scancel", victim], check=True)
    assert finish(execution, 240) is State.FINISHED, execution.error
    assert result(work) == {x: x * x for x in range(16)}
    warnings = messages(execution, ErrorLevel.WARNING)
    assert any(f"batch job {victim}" in w and "resubmitted" in w for w in warnings), warnings
    assert not messages(execution, ErrorLevel.SEVERE)
    wait_empty_queue(slurm)


def test_an_unknown_partition_fails_with_slurms_message(
    engine: Engine, work: Path, slurm: Any
) -> None:
    execution = start(engine, work, slurm_environment("nosuchpartition", max_job_attempts=2), n=3)
    assert finish(execution, 120) is State.FAILED
    severe = messages(execution, ErrorLevel.SEVERE)
    assert len(severe) == 2, severe
    assert all("invalid partition" in m.lower() for m in severe), severe
    assert "max_job_attempts=2" in (execution.error or "")
    wait_empty_queue(slurm)


def test_a_worker_that_cannot_start_is_severe_with_the_jobs_stderr(
    engine: Engine, work: Path, slurm: Any
) -> None:
    environment = slurm_environment(python="/nonexistent/bin/python", max_job_attempts=2)
    execution = start(engine, work, environment, n=3)
    assert finish(execution, 180) is State.FAILED
    severe = messages(execution, ErrorLevel.SEVERE)
    assert severe and all("before its worker started" in m for m in severe), severe
    assert "/nonexistent/bin/python" in severe[0]  # the job's own stderr says what is missing
    wait_empty_queue(slurm)


def test_no_sbatch_on_the_path_says_so(
    engine: Engine, work: Path, slurm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(work))
    execution = start(engine, work, slurm_environment(max_job_attempts=1), n=2)
    assert finish(execution, 60) is State.FAILED
    (severe,) = messages(execution, ErrorLevel.SEVERE)
    assert "`sbatch` was not found" in severe


def test_cancel_leaves_no_batch_job(engine: Engine, work: Path, slurm: Any) -> None:
    execution = start(engine, work, slurm_environment(), n=10, pause=30)
    wait_for(lambda: execution.snapshot().running > 0, 120, "a job running on SLURM")
    assert slurm.squeue()
    execution.cancel()
    assert finish(execution, 60) is State.CANCELLED
    wait_empty_queue(slurm, 20)


# -- PBS (Torque's commands over the same SLURM) -------------------------------------------
def test_pbs_environment_runs_through_qsub(engine: Engine, work: Path, pbs: Any) -> None:
    environment = "PBSEnvironment(queue='debug', max_jobs=2, interface='lo', name='pbs')"
    execution = start(engine, work, environment, n=12)
    assert finish(execution) is State.FINISHED, execution.error
    assert result(work) == {x: x * x for x in range(12)}
    assert_settled(execution, "pbs")
    wait_empty_queue(pbs)


# -- scaling, and what a server's shutdown leaves -----------------------------------------
PHASES = """
import time
x, y, z = Val(int), Val(int), Val(int)

@PythonTask(inputs=[x], outputs=[y])
def square(x):
    time.sleep(0.5)
    return {{"y": x * x}}

@PythonTask(inputs=[y], outputs=[z])
def digest(y):
    for _ in range(60):  # a long local phase after the cluster's part is done
        time.sleep(0.1)
    return {{"z": y}}

DirectSampling(
    evaluation=square.on({environment}) >> digest.on(LocalEnvironment(2)),
    sampling=x.in_(range(6)),
).hook(work_directory / "result.csv")
"""


def test_batch_jobs_follow_the_work_up_to_max_jobs_and_down_to_none(
    engine: Engine, work: Path, slurm: Any
) -> None:
    script = work / "phases.oms"
    script.write_text(PHASES.format(environment=slurm_environment(max_jobs=1, name="cluster")))
    execution = engine.run_script(script)
    most, waiting, emptied_while_running = 0, False, False
    while not execution.done:
        jobs = slurm.squeue()
        most = max(most, len(jobs))
        counts = {e.name: e for e in execution.snapshot().environments}.get("cluster")
        if counts is not None and counts.submitted and not counts.running and not counts.done:
            waiting = True  # handed to the environment, waiting for a batch job's worker
        if counts is not None and counts.done and not jobs and not execution.done:
            emptied_while_running = True
        time.sleep(0.2)
    assert execution.state is State.FINISHED, execution.error
    with (work / "result.csv").open() as f:
        assert sorted(int(r["z"]) for r in csv.DictReader(f)) == [x * x for x in range(6)]
    assert most == 1  # max_jobs=1
    assert waiting
    assert emptied_while_running, "the batch job outlived the work it was for"
    fine = messages(execution, ErrorLevel.FINE)
    assert any("batch job" in m and "submitted" in m for m in fine), fine


def test_a_server_shutdown_cancels_its_batch_jobs(
    start_server: Any, tmp_path: Path, slurm: Any
) -> None:
    from jupyter_mole.client import MoleClient
    from tests.servers import PASSWORD

    server = start_server()
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "sweep.oms").write_text(SWEEP.format(environment=slurm_environment(), n=6, pause=60))
    with MoleClient(server.url, PASSWORD, fingerprint=server.fingerprint) as client:
        execution = client.start(folder, "sweep.oms")
        wait_for(lambda: client.state(execution).running > 0, 120, "a job running on SLURM")
    assert slurm.squeue()
    assert server.stop() == 0, server.output()
    wait_empty_queue(slurm, 20)
