"""``SystemExecTask``: run a program as a task (OpenMOLE's ``SystemExecTask``).

Most models are not Python functions but programs: a compiled simulator, an R
or NetLogo script, a shell pipeline. This task runs such a command in a fresh
job folder per job, with the task's inputs written into the command as
``${x}``, its resources and input files copied in beside it, and what it writes
(its output, exit code, files) read back as the task's outputs. Each command
runs in its own process group, watched by the job, so that cancelling an
execution leaves no program running behind it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import WorkflowError
from ..job import JobCancelled, kill_process_group
from .hooks import fill_template, format_value
from .puzzle import describe
from .tasks import Task
from .values import Val, type_label

if TYPE_CHECKING:
    from ..job import JobContext

__all__ = ["SystemExecTask"]

_NAMES = re.compile(r"\$\{(\w+)\}")
_STDERR_TAIL = 2000


def _relative(path: str, what: str) -> str:
    """A path that stays inside the job folder, or a WorkflowError saying why not."""
    p = Path(path)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise WorkflowError(
            f"SystemExecTask: {what} {path!r} must be a relative path inside the job folder"
        )
    return path


def _captured(val: Any, what: str, types: tuple[Any, ...]) -> Val | None:
    if val is None:
        return None
    if not isinstance(val, Val):
        raise WorkflowError(f"SystemExecTask: {what}= takes a Val, got {describe(val)}")
    if val.type not in (*types, Any, object):
        raise WorkflowError(
            f"SystemExecTask: {what}= takes a Val({type_label(types[0])}), "
            f"got a Val({type_label(val.type)})"
        )
    return val


class SystemExecTask(Task):
    """Run a command (or a list of commands, in order) in a fresh folder per job.

    ::

        x, out = Val(float), Val(File)
        model = SystemExecTask(
            "python3 model.py ${x}",
            inputs=[x], resources=["model.py"], output_files={"result.txt": out},
        )

    Without ``shell=True`` the command is split like a shell would (``shlex``)
    before ``${x}`` is filled in, so a value with spaces stays one argument.
    """

    kind = "SystemExecTask"

    def __init__(
        self,
        command: str | Iterable[str],
        *,
        inputs: Iterable[Val] = (),
        outputs: Iterable[Val] = (),
        defaults: Mapping[Val, Any] | None = None,
        name: str | None = None,
        resources: Iterable[str | os.PathLike[str]] = (),
        input_files: Mapping[Val, str] | None = None,
        output_files: Mapping[str, Val] | None = None,
        stdout: Val | None = None,
        stderr: Val | None = None,
        return_value: Val | None = None,
        environment: Mapping[str, str] | None = None,
        shell: bool = False,
        working_directory: str | os.PathLike[str] | None = None,
    ) -> None:
        commands = (command,) if isinstance(command, str) else command
        if not isinstance(commands, Iterable) or isinstance(commands, (bytes, Mapping)):
            raise WorkflowError(
                f"SystemExecTask takes a command string or a list of them, got {describe(command)}"
            )
        self.commands: tuple[str, ...] = tuple(commands)
        if not self.commands or not all(isinstance(c, str) and c.strip() for c in self.commands):
            raise WorkflowError(
                "SystemExecTask takes a non-empty command string or a list of them, "
                f"got {command!r}"
            )
        resources = [resources] if isinstance(resources, (str, os.PathLike)) else list(resources)
        for item in resources:
            if not isinstance(item, (str, os.PathLike)):
                raise WorkflowError(f"SystemExecTask: resources are paths, got {describe(item)}")
        self.resources: tuple[str, ...] = tuple(os.fspath(r) for r in resources)
        self.input_files: dict[Val, str] = {}
        for val, target in (input_files or {}).items():
            if not isinstance(val, Val) or not isinstance(target, str):
                raise WorkflowError(
                    "SystemExecTask: input_files maps a file Val to a name in the job folder "
                    f"({{data: 'data.csv'}}), got {describe(val)} -> {describe(target)}"
                )
            self.input_files[val] = _relative(target, "input file name")
        self.output_files: dict[str, Val] = {}
        for source, val in (output_files or {}).items():
            if not isinstance(source, str) or not isinstance(val, Val):
                raise WorkflowError(
                    "SystemExecTask: output_files maps a path in the job folder to a file Val "
                    f"({{'result.txt': result}}), got {describe(source)} -> {describe(val)}"
                )
            _captured(val, "output_files", (Path,))
            self.output_files[_relative(source, "output file")] = val
        self.stdout = _captured(stdout, "stdout", (str,))
        self.stderr = _captured(stderr, "stderr", (str,))
        self.return_value = _captured(return_value, "return_value", (int,))
        self.environment: dict[str, str] = dict(environment or {})
        for key, value in self.environment.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise WorkflowError(
                    "SystemExecTask: environment maps variable names to text "
                    f"({{'OMP_NUM_THREADS': '1'}}), got {describe(key)} -> {describe(value)}"
                )
        self.shell = bool(shell)
        self.working_directory: str | None = None
        if working_directory is not None:
            if not isinstance(working_directory, (str, os.PathLike)):
                raise WorkflowError(
                    "SystemExecTask: working_directory is a relative path, "
                    f"got {describe(working_directory)}"
                )
            self.working_directory = _relative(os.fspath(working_directory), "working_directory")
        super().__init__(inputs, outputs, defaults, name)
        # An input file is an input; a captured value is an output (OpenMOLE does the same).
        self.inputs += tuple(v for v in self.input_files if v not in self.inputs)
        captured = [self.stdout, self.stderr, self.return_value, *self.output_files.values()]
        self.outputs += tuple(v for v in dict.fromkeys(captured) if v and v not in self.outputs)

    def check_available(self, available: Mapping[str, Val]) -> None:
        names = {v.name for v in self.inputs}
        templates = [*self.commands, *self.environment.values(), *self.input_files.values()]
        for template in [*templates, *self.output_files]:
            for used in _NAMES.findall(template):
                if used not in names:
                    listed = ", ".join(sorted(names)) or "none"
                    raise WorkflowError(
                        f"task {self.name}: ${{{used}}} in {template!r} is not one of its inputs "
                        f"(inputs: {listed}); add its Val to inputs=[...]"
                    )
        super().check_available(available)

    # -- running ----------------------------------------------------------------
    def process(self, inputs: dict[str, Any], job: JobContext) -> Mapping[str, Any]:
        where = f"task {self.name}"
        folder = job.new_job_directory()
        try:
            self._stage(inputs, job, folder, where)
            cwd = folder / self.working_directory if self.working_directory else folder
            cwd.mkdir(parents=True, exist_ok=True)
            env = {**os.environ}
            env.update({k: fill_template(v, inputs, where) for k, v in self.environment.items()})
            out, err, code = [], [], 0
            for command in self.commands:
                if job.cancelled.is_set():
                    raise JobCancelled(f"{where} was cancelled")
                args, shown = self._command_line(command, inputs, where)
                o, e, code = self._run(args, shown, cwd, env, job)
                out.append(o)
                err.append(e)
                if self.stdout is None:
                    sys.stdout.write(o)
                if self.stderr is None:
                    sys.stdout.write(e)
                if code != 0 and self.return_value is None:
                    hint = ""
                    if self.shell and code == 127:
                        hint = " (the shell did not find a program: is it on the PATH?)"
                    raise self.error(
                        f"command `{shown}` exited with code {code}{hint}",
                        tail=f"; its stderr ends with:\n{e[-_STDERR_TAIL:]}",
                    )
            result: dict[str, Any] = {}
            if self.stdout is not None:
                result[self.stdout.name] = "".join(out)
            if self.stderr is not None:
                result[self.stderr.name] = "".join(err)
            if self.return_value is not None:
                result[self.return_value.name] = code
            result.update(self._collect(inputs, job, folder, where))
            return result
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _stage(self, inputs: dict[str, Any], job: JobContext, folder: Path, where: str) -> None:
        """Copy the resources and input files into the job folder."""
        copies: list[tuple[Path, Path, str]] = []
        for resource in self.resources:
            source = Path(resource)
            source = source if source.is_absolute() else Path(job.work_directory) / source
            copies.append((source, folder / source.name, f"resource {resource!r}"))
        for val, target in self.input_files.items():
            destination = folder / fill_template(target, inputs, where)
            copies.append((Path(inputs[val.name]), destination, f"input file {val.name}"))
        for source, destination, what in copies:
            if not source.exists():
                raise self.error(f"{what} does not exist (looked for {source})")
            destination.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, destination, dirs_exist_ok=True)
            else:
                shutil.copy2(source, destination)

    def _command_line(
        self, command: str, inputs: dict[str, Any], where: str
    ) -> tuple[list[str], str]:
        """The argument list to run, and the command as shown in messages."""
        if self.shell:
            quoted = {k: shlex.quote(format_value(v)) for k, v in inputs.items()}
            text = fill_template(command, quoted, where)
            return ["/bin/sh", "-c", text], text
        try:
            tokens = shlex.split(command)
        except ValueError as error:
            raise self.error(f"cannot split command {command!r}: {error}") from None
        args = [fill_template(token, inputs, where) for token in tokens]
        return args, shlex.join(args)

    def _run(
        self, args: list[str], shown: str, cwd: Path, env: dict[str, str], job: JobContext
    ) -> tuple[str, str, int]:
        """Run one command to its end, or until the job is cancelled; kill its group on exit."""
        try:
            with job.starting_process():
                proc = subprocess.Popen(
                    args,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                    encoding="utf-8",
                    errors="replace",
                )
                job.watch(proc)
        except FileNotFoundError:
            raise self.error(
                f"program {args[0]!r} (in `{shown}`) was not found",
                tail=": it is not on the PATH of the machine that runs the job; install it "
                "there, give its full path, or ship it with resources=[...]",
            ) from None
        except PermissionError:
            raise self.error(f"program {args[0]!r} (in `{shown}`) is not executable") from None
        finished = False
        try:
            while True:
                try:
                    out, err = proc.communicate(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    if job.cancelled.is_set():
                        raise JobCancelled(f"task {self.name} was cancelled") from None
            if job.cancelled.is_set():  # JobContext.cancel may have killed it: not a failure
                raise JobCancelled(f"task {self.name} was cancelled")
            finished = True
            return out, err, proc.returncode
        finally:
            job.unwatch(proc)
            if not finished:
                kill_process_group(proc.pid)
                for pipe in (proc.stdout, proc.stderr):
                    if pipe is not None:
                        pipe.close()
                try:
                    proc.wait(timeout=2.0)
                except subprocess.TimeoutExpired:
                    pass

    def _collect(
        self, inputs: dict[str, Any], job: JobContext, folder: Path, where: str
    ) -> dict[str, Path]:
        """Move the output files out of the job folder, into a folder that outlives it."""
        result: dict[str, Path] = {}
        for source, val in self.output_files.items():
            path = folder / fill_template(source, inputs, where)
            if not path.exists():
                raise self.error(
                    f"output file {source!r} (for {val.name}) was not produced",
                    tail=f"; the job folder contains: {_listing(folder)}",
                )
            target = job.output_file_directory() / path.name
            shutil.move(os.fspath(path), os.fspath(target))
            result[val.name] = target
        return result


def _listing(folder: Path, limit: int = 50) -> str:
    """The files under ``folder``, relative to it, for an error message."""
    names = sorted(
        str(p.relative_to(folder)) + ("/" if p.is_dir() else "") for p in folder.rglob("*")
    )
    if not names:
        return "nothing (it is empty)"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
