"""What a script sees: OpenMOLE's concepts with Python spelling.

Every name in ``__all__`` is in scope in a script without an import, as the
DSL is in an OpenMOLE script.
"""

from __future__ import annotations

from .batch_environments import (
    HTCondorEnvironment,
    LSFEnvironment,
    OAREnvironment,
    PBSEnvironment,
    SGEEnvironment,
    SLURMEnvironment,
)
from .environments import DaskEnvironment, Environment, LocalEnvironment, SSHEnvironment
from .hooks import CopyFileHook, CSVHook, DisplayHook, Hook, display
from .methods import DirectSampling, Method, Replication
from .puzzle import Capsule, Puzzle, Sequence
from .sampling import Cross, Factor, LogRange, Range, Sampling, Zip
from .systemexec import SystemExecTask
from .tasks import EmptyTask, PythonTask, Task
from .values import Aggregation, File, Val

__all__ = [
    "Aggregation",
    "CSVHook",
    "Capsule",
    "CopyFileHook",
    "Cross",
    "DaskEnvironment",
    "DirectSampling",
    "DisplayHook",
    "EmptyTask",
    "Environment",
    "Factor",
    "File",
    "HTCondorEnvironment",
    "Hook",
    "LSFEnvironment",
    "LocalEnvironment",
    "LogRange",
    "Method",
    "OAREnvironment",
    "PBSEnvironment",
    "Puzzle",
    "PythonTask",
    "Range",
    "Replication",
    "SGEEnvironment",
    "SLURMEnvironment",
    "SSHEnvironment",
    "Sampling",
    "Sequence",
    "SystemExecTask",
    "Task",
    "Val",
    "Zip",
    "display",
]


def namespace() -> dict[str, object]:
    """A fresh dict of the DSL's names, for a script to run in."""
    return {name: globals()[name] for name in __all__}
