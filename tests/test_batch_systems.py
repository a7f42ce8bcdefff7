"""The batch-system fixtures of ``tests.batch_systems`` really work: jobs run, keys are checked,
Dask finds its workers. If these fail, the cluster-environment tests cannot mean anything.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import asyncssh
import psutil
import pytest
from dask_jobqueue.slurm import SLURMCluster, SLURMJob
from distributed import Client
from distributed.core import Status
from distributed.deploy.ssh import SSHCluster

from tests.batch_systems import (
    BatchSystemError,
    DaskScheduler,
    Slurm,
    SSHServer,
    asyncssh_run,
    check_ports_free,
    wait_until,
)


def poll(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)


def job_state(job_id: str) -> str:
    """The job's state from slurmctld (no accounting database here, so not sacct)."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True
    )
    match = re.search(r"JobState=(\S+)", out.stdout)
    assert match, out.stdout
    return match.group(1)


# -- the helpers' failure messages ------------------------------------------------------------
def test_a_daemon_that_dies_fails_the_wait_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", "print('fatal: no key file'); raise SystemExit(3)"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    with pytest.raises(BatchSystemError, match=r"(?s)daemon exited with code 3.*no key file"):
        wait_until(
            lambda: False,
            timeout=30,
            what="nothing",
            processes={"daemon": process},
            log_tail=lambda: log.read_text(),
        )


def test_a_busy_fixed_port_is_a_clear_error() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(BatchSystemError, match=f"needs port {port}.*busy"):
            check_ports_free([port], "a test daemon")


# -- SLURM --------------------------------------------------------------------------------
def test_the_slurm_environment_is_exported_while_the_fixture_lives(slurm: Slurm) -> None:
    assert slurm.env == {"SLURM_CONF": str(slurm.conf)}
    assert os.environ["SLURM_CONF"] == str(slurm.conf)
    assert slurm.partition == "debug"
    assert f"NodeName={slurm.host} " in slurm.conf.read_text()
    out = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True)
    assert out.stdout.split() == ["debug*", "idle"], out.stdout + out.stderr


def test_sbatch_runs_a_job_to_completion_with_its_output(slurm: Slurm, tmp_path: Path) -> None:
    sbatch = ["sbatch", "--parsable", "-p", slurm.partition, "-D", str(tmp_path)]
    submitted = subprocess.run(
        [*sbatch, "-o", str(tmp_path / "out-%j.txt"), "--wrap", "echo hi from $SLURM_JOB_ID"],
        capture_output=True,
        text=True,
        check=True,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    assert job_id.isdigit(), submitted.stdout
    poll(lambda: job_state(job_id) == "COMPLETED", 30, f"job {job_id} to complete")
    assert (tmp_path / f"out-{job_id}.txt").read_text() == f"hi from {job_id}\n"
    poll(lambda: job_id not in slurm.squeue(), 10, "the queue to forget the job")


def test_squeue_shows_a_running_job_and_empties_after_scancel(slurm: Slurm) -> None:
    submitted = subprocess.run(
        ["sbatch", "--parsable", "-o", "/dev/null", "--wrap", "sleep 300"],
        capture_output=True,
        text=True,
        check=True,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    poll(lambda: job_state(job_id) == "RUNNING", 30, f"job {job_id} to run")
    assert job_id in slurm.squeue()
    subprocess.run(["scancel", job_id], check=True)
    poll(lambda: not slurm.squeue(), 30, "an empty queue")
    assert job_state(job_id) == "CANCELLED"


def test_qsub_runs_a_script_through_the_torque_wrappers(pbs: Slurm, tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho pbs says $((6 * 7)) from $SLURM_JOB_ID\n")
    out, err = tmp_path / "job.out", tmp_path / "job.err"
    submitted = subprocess.run(
        ["qsub", "-q", pbs.partition, "-o", str(out), "-e", str(err), str(script)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    job_id = submitted.stdout.strip()
    assert job_id.isdigit(), submitted.stdout + submitted.stderr
    poll(lambda: job_state(job_id) == "COMPLETED", 30, f"PBS job {job_id} to complete")
    assert out.read_text() == f"pbs says 42 from {job_id}\n", err.read_text()
    qstat = subprocess.run(["qstat", job_id], capture_output=True, text=True, check=True)
    assert re.search(rf"^{job_id}\s+job\.sh\s+.*\sC\s+{pbs.partition}", qstat.stdout, re.M), (
        qstat.stdout
    )
    poll(lambda: not pbs.squeue(), 10, "an empty queue")


class ClosingSLURMJob(SLURMJob):
    """dask-jobqueue 0.9.0's ``Job.close()`` runs scancel but never marks itself closed.

    ``SpecCluster._close`` then asserts that every job it created (a WeakSet) is closing or
    closed: it passes only if the job objects were garbage-collected already, and fails with
    ``AssertionError: Status.running`` (leaving the cluster "closing") whenever anyone still
    holds a job, as an engine mapping job ids does. Marking the job closed is all it takes.
    """

    async def close(self) -> None:
        await super().close()
        self.status = Status.closed
        self._event_finished.set()


def test_dask_jobqueue_slurmcluster_gets_a_worker(slurm: Slurm, tmp_path: Path) -> None:
    started = time.monotonic()
    cluster = SLURMCluster(
        cores=1,
        memory="1GB",
        processes=1,
        queue=slurm.partition,
        interface="lo",
        log_directory=str(tmp_path / "logs"),
        local_directory=str(tmp_path / "scratch"),
        # every dask Server, the scheduler too, otherwise makes /tmp/dask-scratch-space
        scheduler_options={"dashboard_address": ":0", "local_directory": str(tmp_path)},
        job_cls=ClosingSLURMJob,
    )
    try:
        with Client(cluster) as client:
            cluster.scale(1)
            client.wait_for_workers(1, timeout=60)
            elapsed = time.monotonic() - started
            assert client.submit(lambda x: x + 1, 41).result(timeout=30) == 42
            (worker,) = client.scheduler_info()["workers"].values()
            assert worker["host"] == "127.0.0.1"
            jobs = list(cluster.workers.values())  # holding them is what trips the bug
            assert [job.job_id for job in jobs] == slurm.squeue()
            assert job_state(jobs[0].job_id) == "RUNNING"
            print(f"SLURMCluster: first worker after {elapsed:.1f} s")
    finally:
        cluster.close()  # AssertionError: Status.running here with the stock SLURMJob
    assert cluster.status == Status.closed
    assert [job.status for job in jobs] == [Status.closed]
    poll(lambda: not slurm.squeue(), 30, "the worker's job to leave the queue")


# -- SSH ----------------------------------------------------------------------------------
def test_ssh_runs_the_remote_python_with_the_key(sshd: SSHServer) -> None:
    command = [sshd.python, "-c", "'import sys, distributed; print(sys.executable)'"]
    out = subprocess.run(sshd.ssh_command(*command), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == sshd.python


def test_ssh_refuses_the_wrong_key(sshd: SSHServer) -> None:
    out = subprocess.run(
        sshd.ssh_command("true", key=sshd.wrong_key), capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 255
    assert "Permission denied (publickey)" in out.stderr


def test_asyncssh_logs_in_with_the_key_only(sshd: SSHServer) -> None:
    assert asyncio.run(asyncssh_run(sshd, sshd.key, "echo $((6 * 7))")).strip() == "42"
    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(asyncssh_run(sshd, sshd.wrong_key, "true"))


def test_dask_sshcluster_starts_a_worker_over_ssh(sshd: SSHServer, tmp_path: Path) -> None:
    with (
        SSHCluster(
            [sshd.host, sshd.host],
            connect_options={
                "port": sshd.port,
                "username": sshd.user,
                "client_keys": [str(sshd.key)],
                "known_hosts": str(sshd.known_hosts),
            },
            remote_python=sshd.python,
            # without host=, the remote scheduler and worker bind to the address of the
            # default route (not loopback), and all traffic leaves lo
            scheduler_options={
                "host": sshd.host,
                "port": 0,
                "dashboard_address": ":0",
                "local_directory": str(tmp_path),
            },
            worker_options={"host": sshd.host, "nthreads": 1, "local_directory": str(tmp_path)},
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(1, timeout=60)
        assert client.submit(pow, 3, 4).result(timeout=30) == 81
        (address,) = client.scheduler_info()["workers"]
        assert address.startswith("tcp://127.0.0.1:")
        # the worker really is a process started through sshd, not one of ours
        worker_pid = client.run(os.getpid)[address]
        ancestors = [parent.name() for parent in psutil.Process(worker_pid).parents()]
        assert "sshd" in ancestors, ancestors


# -- an existing Dask scheduler --------------------------------------------------------------
def test_a_client_on_the_dask_scheduler_sees_two_workers_and_computes(
    dask_scheduler: DaskScheduler,
) -> None:
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", dask_scheduler.address)
    with Client(dask_scheduler.address, timeout=10) as client:
        workers = client.scheduler_info()["workers"]
        assert len(workers) == 2
        assert all(w["nthreads"] == 1 for w in workers.values())
        futures = client.map(lambda x: x * x, range(10))
        assert client.gather(futures) == [x * x for x in range(10)]
        assert len(set(client.run(os.getpid).values())) == 2  # two separate processes
