"""Environments as a script writes them: parameters checked, and mapped onto real job scripts.

The job scripts are made by dask-jobqueue's own job classes from our
options, so what is asserted is what the batch system would receive.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import dask_jobqueue
import pytest

from jupyter_mole.engine.dsl import (
    DaskEnvironment,
    HTCondorEnvironment,
    LSFEnvironment,
    OAREnvironment,
    PBSEnvironment,
    SGEEnvironment,
    SLURMEnvironment,
    SSHEnvironment,
)
from jupyter_mole.engine.dsl.batch_environments import BatchEnvironment
from jupyter_mole.engine.errors import ScriptError, WorkflowError
from jupyter_mole.engine.script import load_script


def job_script(environment: BatchEnvironment) -> str:
    job_class = getattr(dask_jobqueue, environment.jobqueue_class).job_cls
    options = environment.jobqueue_options()
    return job_class(scheduler="tcp://127.0.0.1:1", name="w", **options).job_script()


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        (7200, 7200),
        (90.4, 90),
        ("02:00:00", 7200),
        ("1-00:00:00", 86400),
        ("30:00", 1800),
        ("2 hours", 7200),
        ("90 minutes", 5400),
        (datetime.timedelta(hours=1, minutes=30), 5400),
    ],
)
def test_wall_time_is_read_the_ways_a_modeller_writes_it(given: object, seconds: int) -> None:
    assert SLURMEnvironment(wall_time=given).wall_time == seconds


@pytest.mark.parametrize(
    ("given", "megabytes"), [(2000, 2000), ("4 GB", 4000), ("512MB", 512), ("2GiB", 2147)]
)
def test_memory_is_megabytes_or_a_size(given: object, megabytes: int) -> None:
    assert PBSEnvironment(memory=given).memory == megabytes


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"wall_time": "soon"}, ["wall_time", "02:00:00", "'soon'"]),
        ({"wall_time": -5}, ["wall_time", "positive"]),
        ({"memory": "lots"}, ["memory", "4 GB", "'lots'"]),
        ({"memory": [1]}, ["memory", "size", "list"]),
        ({"cores": 0}, ["cores", "whole number of 1 or more"]),
        ({"max_jobs": 2.5}, ["max_jobs", "whole number"]),
        ({"max_job_attempts": 0}, ["max_job_attempts"]),
        ({"queue": ""}, ["queue", "non-empty string"]),
        ({"extra": [3]}, ["extra", "list of strings"]),
        ({"partition": "a", "queue": "b"}, ["partition or queue, not both"]),
    ],
)
def test_bad_parameters_say_which_and_what_is_expected(
    kwargs: dict[str, object], words: list[str]
) -> None:
    with pytest.raises(WorkflowError) as raised:
        SLURMEnvironment(**kwargs)  # type: ignore[arg-type]
    for word in words:
        assert word in str(raised.value)


def test_slurm_job_script_carries_every_parameter() -> None:
    environment = SLURMEnvironment(
        partition="short",
        wall_time="1 hour",
        memory="2 GB",
        cores=4,
        account="lab",
        qos="high",
        reservation="course",
        gres="gpu:1",
        constraints="haswell",
        extra=["--exclusive"],
        modules=["python/3.11"],
        setup=["source ~/model.sh"],
        python="/opt/py/bin/python",
    )
    script = job_script(environment)
    for line in [
        "#SBATCH -p short",
        "#SBATCH -A lab",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=",
        "#SBATCH -t 01:00:00",
        "#SBATCH --qos=high",
        "#SBATCH --reservation=course",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --constraint=haswell",
        "#SBATCH --exclusive",
        "module load python/3.11",
        "source ~/model.sh",
        "/opt/py/bin/python -m distributed.cli.dask_worker",
        "--nthreads 4",
    ]:
        assert line in script, (line, script)
    assert environment.slots == 4 * environment.max_jobs


def test_what_is_not_given_is_left_to_the_queue_defaults() -> None:
    script = job_script(SLURMEnvironment())
    assert "#SBATCH -t" not in script  # not dask-jobqueue's 30 minutes
    assert "#SBATCH --mem" not in script
    assert "--memory-limit 0" in script  # the worker may use the node's memory
    assert "#SBATCH -p" not in script


@pytest.mark.parametrize(
    ("environment", "lines"),
    [
        (
            PBSEnvironment(queue="batch", wall_time=600, account="lab"),
            ["#PBS -q batch", "#PBS -l walltime=00:10:00", "#PBS -A lab", "nodes=1:ppn=1"],
        ),
        (
            PBSEnvironment(resource_spec="select=1:ncpus=2", memory=1000),
            ["#PBS -l select=1:ncpus=2"],
        ),
        (
            SGEEnvironment(queue="all.q", wall_time="2:00:00", memory=4000, account="p"),
            ["#$ -q all.q", "#$ -l h_rt=02:00:00", "#$ -P p", "#$ -l h_vmem=4000M"],
        ),
        (
            LSFEnvironment(queue="normal", wall_time=5400, memory="2GB", account="p"),
            ["#BSUB -q normal", "#BSUB -W 01:30", '#BSUB -P "p"', "#BSUB -M "],
        ),
        (
            OAREnvironment(queue="default", wall_time=3600, best_effort=True, account="p"),
            ["#OAR -q default", "walltime=01:00:00", "#OAR -t besteffort", "#OAR --project p"],
        ),
        (
            HTCondorEnvironment(
                memory=2000, requirements='Arch == "X86_64"', wall_time=600, account="grp"
            ),
            [
                'requirements = Arch == "X86_64"',
                "+MaxRuntime = 600",
                "MY.DaskWorkerMemory = 2000000000",
                "accounting_group = grp",
            ],
        ),
    ],
    ids=["pbs", "pbs-resource-spec", "sge", "lsf", "oar", "htcondor"],
)
def test_each_batch_system_gets_its_own_directives(
    environment: BatchEnvironment, lines: list[str]
) -> None:
    script = job_script(environment)
    for line in lines:
        assert line in script, (line, script)


def test_dask_and_ssh_environments_check_their_parameters(tmp_path: Path) -> None:
    assert DaskEnvironment("127.0.0.1:8786").address == "tcp://127.0.0.1:8786"
    assert DaskEnvironment("tls://host:8786").address == "tls://host:8786"
    with pytest.raises(WorkflowError, match="address must be a non-empty string"):
        DaskEnvironment("")
    ssh = SSHEnvironment("me", "cluster.example.org", 3, key=tmp_path / "id")
    assert (ssh.slots, ssh.port, ssh.key) == (3, 22, tmp_path / "id")
    with pytest.raises(WorkflowError, match="slots must be a whole number of 1 or more"):
        SSHEnvironment("me", "host", 0)


def test_a_script_names_its_environments_after_their_variables(tmp_path: Path) -> None:
    script = tmp_path / "sweep.oms"
    script.write_text(
        "x = Val(int)\n"
        "cluster = SLURMEnvironment(partition='debug', wall_time='10 minutes')\n"
        "@PythonTask(inputs=[x], outputs=[x])\n"
        "def model(x):\n"
        "    return {'x': x}\n"
        "DirectSampling(evaluation=model.on(cluster), sampling=x.in_(range(3)))\n"
    )
    workflow = load_script(script, tmp_path).workflow
    environments = {c.environment.name for c in workflow.capsules() if c.environment}
    assert environments == {"cluster"}


def test_a_bad_environment_parameter_points_at_the_script_line(tmp_path: Path) -> None:
    script = tmp_path / "bad.oms"
    script.write_text("x = Val(int)\n\nenv = SLURMEnvironment(memory='plenty')\nx\n")
    with pytest.raises(ScriptError) as raised:
        load_script(script, tmp_path)
    assert raised.value.lineno == 3
    assert "memory" in raised.value.message
