"""The embedded workflow engine: OpenMOLE's concepts, run on Dask. No HTTP in here."""

from __future__ import annotations

from .engine import Engine
from .errors import JobError, MoleError, ScalaScriptError, ScriptError, WorkflowError
from .execution import Execution
from .script import Script, load_script, load_source
from .state import ErrorLevel, ErrorRecord, Snapshot, State

__all__ = [
    "Engine",
    "ErrorLevel",
    "ErrorRecord",
    "Execution",
    "JobError",
    "MoleError",
    "ScalaScriptError",
    "Script",
    "ScriptError",
    "Snapshot",
    "State",
    "WorkflowError",
    "load_script",
    "load_source",
]
