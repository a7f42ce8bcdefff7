"""The engine's exceptions.

::

    MoleError                   anything the engine reports to a person
     +-- ScriptError            a script did not load (carries file and line)
     |    +-- ScalaScriptError  the script is OpenMOLE Scala: it needs an OpenMOLE server
     +-- WorkflowError          a workflow that cannot run as written (missing input, bad type)
     |    +-- TaskError         ...found by a task's job (an output of the wrong type, a command's exit)
     +-- JobError               a job failed on its environment (task, inputs, worker traceback)
     +-- EnvironmentFailure     an environment cannot run jobs (unreachable, refuses batch jobs)

Messages are written for the modeller, not for us: each says what was wrong and,
where there is one, what to do.
"""

from __future__ import annotations

__all__ = [
    "EnvironmentFailure",
    "JobError",
    "MoleError",
    "ScalaScriptError",
    "ScriptError",
    "TaskError",
    "WorkflowError",
]


class MoleError(Exception):
    """Base of every error the engine reports; ``str()`` is the message for the user."""

    def __init__(self, message: str, stack_trace: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.stack_trace = stack_trace


class ScriptError(MoleError):
    """A script failed to load; ``filename`` and ``lineno`` point at the culprit."""

    def __init__(
        self,
        message: str,
        filename: str | None = None,
        lineno: int | None = None,
        stack_trace: str | None = None,
    ) -> None:
        super().__init__(message, stack_trace)
        self.filename = filename
        self.lineno = lineno


class ScalaScriptError(ScriptError):
    """The script is OpenMOLE's Scala dialect, which only an OpenMOLE server runs."""


class WorkflowError(MoleError):
    """The workflow is wrong as written; raised before or while a job runs."""


class TaskError(WorkflowError):
    """What a task's job found wrong, naming the task and the script line that defines it.

    ``str()`` is the whole sentence: "task model (pi.oms, line 7), output: y
    should be int, got float 0.0". ``message`` leaves the task's name out, as
    the engine's job failure already gives it: "task model failed on inputs
    {x=1}: output: y should be int, got float 0.0 (pi.oms, line 7)"; the name
    then reads once. ``tail`` is text that must come last, after the script
    line (the end of a program's stderr).
    """

    def __init__(
        self,
        task: str,
        detail: str,
        site: str | None = None,
        separator: str = ": ",
        tail: str = "",
    ) -> None:
        where = f" ({site})" if site else ""
        super().__init__(f"{detail}{where}{tail}")
        self.args = (f"task {task}{where}{separator}{detail}{tail}",)
        self.task = task
        self.site = site
        self.detail = detail
        self._parts = (task, detail, site, separator, tail)

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self) -> tuple:
        return (type(self), self._parts)


class JobError(MoleError):
    """A job failed: which task, with which inputs, and the worker's traceback."""

    def __init__(
        self,
        message: str,
        task: str,
        inputs: dict | None = None,
        stack_trace: str | None = None,
    ) -> None:
        super().__init__(message, stack_trace)
        self.task = task
        self.inputs = inputs or {}


class EnvironmentFailure(MoleError):
    """An environment cannot run jobs: its cluster is unreachable, refuses jobs, or loses them all."""

    def __init__(self, environment: str, message: str, stack_trace: str | None = None) -> None:
        super().__init__(message, stack_trace)
        self.environment = environment
