"""Batch systems as a script names them: SLURM, PBS, SGE, HTCondor, LSF, OAR.

Each is a description with OpenMOLE's parameter names in Python spelling
(``wallTime`` is ``wall_time``), mapped onto dask-jobqueue's options by
``jobqueue_options``. A batch job holds one Dask worker of ``cores`` threads;
the engine scales the number of jobs with the work, up to ``max_jobs``, and
down to none when idle. The engine runs where the scheduler's commands
(``sbatch``, ``qsub``...) work, as OpenMOLE does on a cluster's login node.

``wall_time`` takes seconds, a ``timedelta``, ``"HH:MM:SS"`` or words such as
``"2 hours"``; ``memory`` takes megabytes or a size such as ``"4 GB"``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from typing import Any, ClassVar

from ..errors import WorkflowError
from .environments import Environment, optional_text, whole

__all__ = [
    "BatchEnvironment",
    "HTCondorEnvironment",
    "LSFEnvironment",
    "OAREnvironment",
    "PBSEnvironment",
    "SGEEnvironment",
    "SLURMEnvironment",
]

_CLOCK = re.compile(r"^(?:(\d+)-)?(\d+):(\d{1,2})(?::(\d{1,2}))?$")


def seconds_of(value: Any, what: str) -> int | None:
    """A wall time in whole seconds from what a modeller would write."""
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        clock = _CLOCK.match(value.strip())
        if clock:
            days, first, second, third = (int(g) if g else 0 for g in clock.groups())
            if clock.group(4) is None and clock.group(1) is None:  # "MM:SS", as SLURM reads it
                first, second, third = 0, first, second
            seconds = ((days * 24 + first) * 60 + second) * 60 + third
        else:
            from dask.utils import parse_timedelta

            try:
                seconds = parse_timedelta(value.strip().replace(" ", ""), default="s")
            except (KeyError, ValueError):
                raise WorkflowError(
                    f'{what} must be a duration such as "02:00:00", "2 hours" or 7200 (seconds), '
                    f"got {value!r}"
                ) from None
    else:
        raise WorkflowError(f"{what} must be a duration, got {type(value).__name__}")
    if seconds <= 0:
        raise WorkflowError(f"{what} must be positive, got {value!r}")
    return max(1, round(seconds))


def megabytes_of(value: Any, what: str) -> int | None:
    """A memory size in megabytes: a number is megabytes already (OpenMOLE's unit)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        megabytes = float(value)
    elif isinstance(value, str):
        from dask.utils import parse_bytes

        try:
            megabytes = parse_bytes(value.strip().replace(" ", "")) / 1e6
        except ValueError:
            raise WorkflowError(
                f'{what} must be a size such as "4 GB", "500MB" or 4000 (megabytes), got {value!r}'
            ) from None
    else:
        raise WorkflowError(f"{what} must be a size, got {type(value).__name__}")
    if megabytes <= 0:
        raise WorkflowError(f"{what} must be positive, got {value!r}")
    return max(1, round(megabytes))


def lines_of(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable) or not all(isinstance(v, str) for v in value):
        raise WorkflowError(f"{what} must be a string or a list of strings, got {value!r}")
    return tuple(v for v in value if v.strip())


def clock(seconds: int, with_seconds: bool = True) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if with_seconds:
        return f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{hours:02d}:{minutes + (secs > 0):02d}"


class BatchEnvironment(Environment):
    """What every batch system shares.

    ``queue``: the queue (SLURM's partition). ``wall_time``, ``memory`` and
    ``cores``: what each batch job asks for. ``account``: the account or
    project charged. ``extra``: more scheduler directives, as written after
    ``#SBATCH`` (or ``#PBS``...). ``modules``: environment modules loaded
    before the worker starts; ``setup``: shell commands run before it.
    ``python``: the Python on the nodes (it must have ``jupyter_mole``).
    ``max_jobs``: how many batch jobs may exist at once. ``max_job_attempts``:
    how many batch jobs may fail to give a worker before the execution fails.
    ``interface``: the network interface workers and scheduler talk on (e.g.
    ``"ib0"``). ``shared_directory``: where job scripts' logs go, on a file
    system the nodes share (default: the engine's state directory).
    """

    kind = "batch"
    jobqueue_class: ClassVar[str] = ""
    cancel_command: ClassVar[str] = ""
    wall_time_directive: ClassVar[str] = ""  # how dask-jobqueue's wall time line is recognised
    account_option: ClassVar[str] = "account"  # dask-jobqueue's name for it

    def __init__(
        self,
        *,
        queue: str | None = None,
        wall_time: Any = None,
        memory: Any = None,
        cores: int = 1,
        account: str | None = None,
        extra: Any = None,
        modules: Any = None,
        setup: Any = None,
        python: str | None = None,
        max_jobs: int = 4,
        max_job_attempts: int = 3,
        interface: str | None = None,
        shared_directory: str | None = None,
        name: str | None = None,
        retry: int = 0,
        max_resubmissions: int = 3,
    ) -> None:
        super().__init__(name, retry, max_resubmissions)
        label = type(self).__name__
        self.queue = optional_text(queue, f"{label}: queue")
        self.wall_time = seconds_of(wall_time, f"{label}: wall_time")
        self.memory = megabytes_of(memory, f"{label}: memory")
        self.cores = whole(cores, f"{label}: cores", 1)
        self.account = optional_text(account, f"{label}: account")
        self.extra = lines_of(extra, f"{label}: extra")
        self.modules = lines_of(modules, f"{label}: modules")
        self.setup = lines_of(setup, f"{label}: setup")
        self.python = optional_text(python, f"{label}: python")
        self.max_jobs = whole(max_jobs, f"{label}: max_jobs", 1)
        self.max_job_attempts = whole(max_job_attempts, f"{label}: max_job_attempts", 1)
        self.interface = optional_text(interface, f"{label}: interface")
        self.shared_directory = optional_text(shared_directory, f"{label}: shared_directory")

    @property
    def slots(self) -> int:
        return self.max_jobs * self.cores

    def jobqueue_options(self) -> dict[str, Any]:
        """Keyword arguments of the dask-jobqueue cluster class, common part."""
        options: dict[str, Any] = {
            "cores": self.cores,
            "processes": 1,
            "memory": f"{self.memory or 1000}MB",
            "job_extra_directives": list(self.extra),
            "job_script_prologue": [f"module load {m}" for m in self.modules] + list(self.setup),
        }
        if self.queue is not None:
            options["queue"] = self.queue
        if self.account is not None:
            options[self.account_option] = self.account
        if self.wall_time is not None:
            options["walltime"] = clock(self.wall_time)
        elif self.wall_time_directive:
            # dask-jobqueue would ask for 30 minutes; the queue's own default is the right one.
            options.setdefault("job_directives_skip", []).append(self.wall_time_directive)
        if self.memory is None:
            options["worker_extra_args"] = ["--memory-limit", "0"]  # the node's, not 1 GB
        if self.python is not None:
            options["python"] = self.python
        if self.interface is not None:
            options["interface"] = self.interface
        return options


class SLURMEnvironment(BatchEnvironment):
    """SLURM (``sbatch``); ``partition`` is the queue. Also ``qos``,
    ``reservation``, ``gres`` and ``constraints`` as OpenMOLE names them."""

    kind = "slurm"
    jobqueue_class = "SLURMCluster"
    cancel_command = "scancel"
    wall_time_directive = "#SBATCH -t "

    def __init__(
        self,
        *,
        partition: str | None = None,
        qos: str | None = None,
        reservation: str | None = None,
        gres: str | None = None,
        constraints: str | None = None,
        **common: Any,
    ) -> None:
        if partition is not None and common.get("queue") is not None:
            raise WorkflowError("SLURMEnvironment: give partition or queue, not both")
        if partition is not None:
            common["queue"] = partition
        super().__init__(**common)
        self.qos = optional_text(qos, "SLURMEnvironment: qos")
        self.reservation = optional_text(reservation, "SLURMEnvironment: reservation")
        self.gres = optional_text(gres, "SLURMEnvironment: gres")
        self.constraints = optional_text(constraints, "SLURMEnvironment: constraints")

    @property
    def partition(self) -> str | None:
        return self.queue

    def jobqueue_options(self) -> dict[str, Any]:
        options = super().jobqueue_options()
        directives = options["job_extra_directives"]
        for flag, value in (
            ("--qos", self.qos),
            ("--reservation", self.reservation),
            ("--gres", self.gres),
            ("--constraint", self.constraints),
        ):
            if value is not None:
                directives.append(f"{flag}={value}")
        if self.memory is None:
            options.setdefault("job_directives_skip", []).append("--mem")
        return options


class _ResourceSpecEnvironment(BatchEnvironment):
    """A batch system whose resources are one ``-l`` line, given whole as ``resource_spec``."""

    def __init__(self, *, resource_spec: str | None = None, **common: Any) -> None:
        super().__init__(**common)
        label = f"{type(self).__name__}: resource_spec"
        self.resource_spec = optional_text(resource_spec, label)

    def default_resource_spec(self) -> str | None:
        return None

    def jobqueue_options(self) -> dict[str, Any]:
        options = super().jobqueue_options()
        spec = self.resource_spec or self.default_resource_spec()
        if spec is not None:
            options["resource_spec"] = spec
        return options


class PBSEnvironment(_ResourceSpecEnvironment):
    """PBS / Torque (``qsub``). ``resource_spec`` is the ``-l`` line (e.g.
    ``"nodes=1:ppn=4"``); by default it is made from ``cores`` and ``memory``."""

    kind = "pbs"
    jobqueue_class = "PBSCluster"
    cancel_command = "qdel"
    wall_time_directive = "-l walltime="

    def default_resource_spec(self) -> str | None:
        # With a memory, dask-jobqueue writes select=1:ncpus=..:mem=.. itself.
        return f"nodes=1:ppn={self.cores}" if self.memory is None else None


class SGEEnvironment(_ResourceSpecEnvironment):
    """Sun / Son of / Univa Grid Engine (``qsub``); ``account`` is the project."""

    kind = "sge"
    jobqueue_class = "SGECluster"
    cancel_command = "qdel"
    wall_time_directive = "-l h_rt="
    account_option = "project"

    def default_resource_spec(self) -> str | None:
        return None if self.memory is None else f"h_vmem={self.memory}M"


class HTCondorEnvironment(BatchEnvironment):
    """HTCondor (``condor_submit``). ``requirements`` is a ClassAd expression;
    ``disk`` what each job needs on its node (default 1 GB)."""

    kind = "htcondor"
    jobqueue_class = "HTCondorCluster"
    cancel_command = "condor_rm"
    account_option = "accounting_group"

    def __init__(
        self, *, requirements: str | None = None, disk: Any = "1 GB", **common: Any
    ) -> None:
        super().__init__(**common)
        self.requirements = optional_text(requirements, "HTCondorEnvironment: requirements")
        self.disk = megabytes_of(disk, "HTCondorEnvironment: disk")

    def jobqueue_options(self) -> dict[str, Any]:
        options = super().jobqueue_options()
        options.pop("queue", None)
        walltime = options.pop("walltime", None)
        directives: dict[str, str] = {}
        for line in options.pop("job_extra_directives"):
            key, _, value = line.partition("=")
            directives[key.strip()] = value.strip()
        if self.requirements is not None:
            directives["requirements"] = self.requirements
        if walltime is not None and self.wall_time is not None:
            directives["+MaxRuntime"] = str(self.wall_time)
        if "accounting_group" in options:
            directives["accounting_group"] = options.pop("accounting_group")
        options["job_extra_directives"] = directives
        options["disk"] = f"{self.disk}MB"
        return options


class LSFEnvironment(BatchEnvironment):
    """IBM Spectrum LSF (``bsub``); ``account`` is the project."""

    kind = "lsf"
    jobqueue_class = "LSFCluster"
    cancel_command = "bkill"
    wall_time_directive = "#BSUB -W "
    account_option = "project"

    def jobqueue_options(self) -> dict[str, Any]:
        options = super().jobqueue_options()
        if self.wall_time is not None:
            options["walltime"] = clock(self.wall_time, with_seconds=False)
        options["use_stdin"] = True
        if self.memory is None:
            options.setdefault("job_directives_skip", []).extend(["-M ", "rusage[mem="])
        return options


class OAREnvironment(BatchEnvironment):
    """OAR (``oarsub``); ``best_effort`` submits best-effort jobs, ``account`` is the project."""

    kind = "oar"
    jobqueue_class = "OARCluster"
    cancel_command = "oardel"
    account_option = "project"

    def __init__(self, *, best_effort: bool = False, **common: Any) -> None:
        super().__init__(**common)
        if not isinstance(best_effort, bool):
            raise WorkflowError(
                f"OAREnvironment: best_effort must be True or False, got {best_effort!r}"
            )
        self.best_effort = best_effort

    def jobqueue_options(self) -> dict[str, Any]:
        options = super().jobqueue_options()
        if self.best_effort:
            options["job_extra_directives"].append("-t besteffort")
        # OAR has no memory request of its own; dask-jobqueue warns unless told so.
        options["memory_per_core_property_name"] = "not_applicable"
        return options
