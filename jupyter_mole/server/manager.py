"""The executions a server holds: start from an archive, report, read files, cancel, remove.

This is the server's domain, kept free of HTTP so that handlers stay thin and
the same logic serves both API generations. Live executions come from the
engine; past ones (finished, or interrupted by a restart) from the registry,
through the same methods.

Clients poll the state of an execution many times a second, so finding one must
not cost an SQLite lookup each time: a running execution is found in memory, and
the record of an ended one is kept in a small cache once read. Both are safe
because one server process owns its state directory (a server starting marks the
executions a previous one left running as interrupted): a record changes only
through this manager, when an execution it started ends (saved before the
execution says it is done) or is removed (which drops it from memory too).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import shutil
import threading
import traceback
import uuid
from pathlib import Path, PurePosixPath

from .. import archive
from ..engine import Engine, Execution, MoleError, State, load_script
from ..engine.output import read_output
from ..engine.registry import INTERRUPTED, ExecutionRecord, Registry
from ..engine.state import ErrorLog, ErrorRecord
from ..protocol import (
    CapsuleState,
    DirectoryEntry,
    EnvironmentStatus,
    ErrorInfo,
    ExecutionInfo,
    ExecutionState,
)

__all__ = ["ExecutionManager", "FileMissing", "Limits", "NotFound", "Refused", "ServiceError"]

WORK = "workDirectory"
ENDED_CACHE = 512  # records of ended executions kept in memory, the most recently read


class ServiceError(Exception):
    """An error for the client: ``message`` says what was wrong and what to do."""

    def __init__(self, message: str, stack_trace: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.stack_trace = stack_trace


class NotFound(ServiceError):
    """No such execution, or no such file in it."""


class FileMissing(NotFound):
    """The execution exists, but not this file or folder of its work directory."""


class Refused(ServiceError):
    """The request cannot be done as asked (OpenMOLE answers 417 Expectation Failed)."""


@dataclasses.dataclass
class Limits:
    """Caps on what a client may upload and keep."""

    upload_bytes: int = archive.DEFAULT_MAX_UPLOAD
    unpacked_bytes: int = archive.DEFAULT_MAX_UNPACK
    files: int = archive.DEFAULT_MAX_FILES
    tags: int = 32
    tag_length: int = 1024


def _counts(execution: Execution | None, record: ExecutionRecord) -> tuple:
    if execution is not None:
        snapshot = execution.snapshot()
        return snapshot.capsules, snapshot.environments
    return record.capsules, record.environments


class ExecutionManager:
    """All executions of one state directory; thread-safe."""

    def __init__(self, state_directory: Path, engine: Engine, limits: Limits | None = None) -> None:
        self.engine = engine
        self.limits = limits or Limits()
        self.registry = Registry(state_directory / "executions")
        self.interrupted = self.registry.mark_interrupted()
        # Running executions started by this process, with the record saved when they started.
        self._live: dict[str, tuple[Execution, ExecutionRecord]] = {}
        # Records of ended executions (final until removed), most recently read last.
        self._ended_records: collections.OrderedDict[str, ExecutionRecord] = (
            collections.OrderedDict()
        )
        # Bumped by every removal: a record read from the registry before a removal may be
        # that of the removed execution, and must not go into the cache after it.
        self._removals = 0
        # The error logs of the executions started by this process, kept after they end so
        # that every token's "errors since my last query" cursor still gets what it missed.
        self._logs: dict[str, ErrorLog] = {}
        self._lock = threading.Lock()
        self.shutting_down = False  # executions ending now were interrupted, not cancelled

    # -- starting ---------------------------------------------------------------------
    def check_tags(self, tags: dict[str, str]) -> dict[str, str]:
        if len(tags) > self.limits.tags:
            raise Refused(f"too many tags ({len(tags)}); at most {self.limits.tags}")
        for key, value in tags.items():
            if not key or len(key) > 64 or len(value) > self.limits.tag_length:
                raise Refused(
                    f"tag {key[:64]!r}: a tag's name takes 1 to 64 characters and its value "
                    f"at most {self.limits.tag_length}"
                )
        return tags

    def start(self, script: str | None, upload: Path | None, tags: dict[str, str]) -> str:
        """Unpack ``upload`` (a tar.gz) as a new work directory and start ``script`` in it."""
        if not script:
            raise Refused("Missing mandatory script parameter.")
        if upload is None:
            raise Refused(
                "Missing workDirectory: send the work directory as a tar.gz file part named "
                "workDirectory"
            )
        tags = self.check_tags(tags)
        execution_id = str(uuid.uuid4())
        folder = self.registry.folder(execution_id)
        work = folder / WORK
        try:
            folder.mkdir(parents=True)
            try:
                archive.unpack(
                    upload, work, max_bytes=self.limits.unpacked_bytes, max_files=self.limits.files
                )
            except archive.ArchiveTooLarge as e:
                raise Refused(
                    f"the workDirectory archive was refused: {e} (This server's caps: "
                    f"{self.limits.unpacked_bytes} bytes unpacked, {self.limits.files} files; "
                    f"jupyter-mole serve --max-unpacked, --max-files.)"
                ) from None
            except archive.ArchiveError as e:
                raise Refused(f"the workDirectory archive was refused: {e}") from None
            script_path = self._script_path(work, script)
            try:
                loaded = load_script(script_path, work)
            except MoleError as e:
                raise Refused(*_load_error(e, work)) from None
            record = ExecutionRecord(id=execution_id, script=script, tags=tags)
            self.registry.save(record)
            try:
                execution = self.engine.start(
                    loaded.workflow,
                    work,
                    execution_id=execution_id,
                    script=script,
                    on_end=lambda ex: self._ended(ex, record),
                )
            except MoleError as e:
                self.registry.remove(execution_id)
                raise Refused(e.message, e.stack_trace) from None
            with self._lock:
                self._logs[execution_id] = execution.context.errors
                if not execution.done:
                    self._live[execution_id] = (execution, record)
            return execution_id
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _script_path(self, work: Path, script: str) -> Path:
        relative = PurePosixPath(script)
        if relative.is_absolute() or ".." in relative.parts:
            raise Refused(f"the script {script!r} must be a path inside the work directory")
        path = work.joinpath(*relative.parts)
        try:
            found = path.is_file()
        except (OSError, ValueError):  # a name too long, a NUL byte
            found = False
        if not found:
            content = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file())
            shown = ", ".join(content[:20]) + (
                f" and {len(content) - 20} more" if len(content) > 20 else ""
            )
            raise Refused(
                f"the script {script} is not in the workDirectory archive; it contains: "
                f"{shown or 'nothing'}"
            )
        return path

    def _ended(self, execution: Execution, record: ExecutionRecord) -> None:
        snapshot = execution.snapshot()
        record.state = execution.state
        record.started = execution.started
        record.ended = execution.ended
        if self.shutting_down and execution.state is State.CANCELLED:
            record.state, execution.error = State.FAILED, INTERRUPTED
        record.error = _failure(execution)
        record.stack_trace = execution.stack_trace
        record.capsules = snapshot.capsules
        record.environments = snapshot.environments
        if self.registry.folder(execution.id).exists():
            self.registry.save(record)
            self.registry.save_errors(execution.id, execution.errors())

    # -- reading -----------------------------------------------------------------------
    def _find(self, execution_id: str | None) -> tuple[Execution | None, ExecutionRecord]:
        """The engine's execution (until it is found ended) and the record of an id.

        A running execution and a cached ended record answer without the registry.
        """
        if not execution_id:
            raise Refused("id is missing")
        with self._lock:
            live = self._live.get(execution_id)
            if live is not None:
                if not live[0].done:
                    return live
                # Its record was saved when it ended (before ``done``): read it from there,
                # this once, like any other ended execution's.
                del self._live[execution_id]
            elif (cached := self._ended_records.get(execution_id)) is not None:
                self._ended_records.move_to_end(execution_id)
                return None, cached
            removals = self._removals
        record = self.registry.get(execution_id)
        if record is None:
            raise NotFound("Execution not found")
        if record.state is not State.RUNNING:
            self._remember(record, removals)
        return (live[0] if live is not None else None), record

    def _remember(self, record: ExecutionRecord, removals: int) -> None:
        """Cache an ended execution's record, unless a removal came since it was read.

        An ended record changes only by its removal; one read just before a removal
        would otherwise come back into the cache after it, and answer forever.
        """
        with self._lock:
            if self._removals != removals:
                return
            self._ended_records[record.id] = record
            self._ended_records.move_to_end(record.id)
            while len(self._ended_records) > ENDED_CACHE:
                self._ended_records.popitem(last=False)

    def state(self, execution_id: str | None, reader: str | None = None) -> ExecutionState:
        """The state; ``reader`` gets only the environment errors it has not seen yet."""
        execution, record = self._find(execution_id)
        state = execution.state if execution is not None else record.state
        capsules, environments = _counts(execution, record)
        new_errors: list[ErrorRecord] = []
        if reader is not None:
            new_errors = self._error_log(record.id).since_last_read(reader)
        result = ExecutionState(
            state=state.value,
            capsules=[(name, CapsuleState(c.ready, c.running, c.completed)) for name, c in capsules.items()],
            environments=[
                EnvironmentStatus(
                    e.name, e.submitted, e.running, e.done, e.failed,
                    [_error_info(r) for r in new_errors if r.environment == e.name],
                )
                for e in environments
            ],
        )  # fmt: skip
        result.ready = sum(c.ready for _, c in result.capsules)
        result.running = sum(c.running for _, c in result.capsules)
        result.completed = sum(c.completed for _, c in result.capsules)
        if state is State.FAILED:
            error = _failure(execution) if execution is not None else record.error
            trace = execution.stack_trace if execution is not None else record.stack_trace
            result.error = ErrorInfo(error or "the execution failed", trace)
        return result

    def _error_log(self, execution_id: str) -> ErrorLog:
        """The execution's error log; one run before a restart gets it back from disk."""
        with self._lock:
            log = self._logs.get(execution_id)
            if log is None:
                log = self._logs[execution_id] = ErrorLog()
                for error in self.registry.load_errors(execution_id):
                    log.add(error)
            return log

    def info(self, execution_id: str) -> ExecutionInfo:
        execution, record = self._find(execution_id)
        return self._info(execution, record)

    def _info(self, execution: Execution | None, record: ExecutionRecord) -> ExecutionInfo:
        capsules, _ = _counts(execution, record)
        live = execution is not None
        return ExecutionInfo(
            id=record.id,
            state=(execution.state if live else record.state).value,
            script=record.script,
            tags=record.tags,
            submitted=record.submitted,
            started=execution.started if live else record.started,
            ended=execution.ended if live else record.ended,
            ready=sum(c.ready for c in capsules.values()),
            running=sum(c.running for c in capsules.values()),
            completed=sum(c.completed for c in capsules.values()),
            error=_failure(execution) if live else record.error,
        )

    def ids(self) -> list[str]:
        return [r.id for r in self.registry.list()]

    def list(self, offset: int = 0, limit: int | None = None) -> tuple[list[ExecutionInfo], int]:
        """Executions with details, newest first, and how many there are in all."""
        records = self.registry.list(offset, limit)
        with self._lock:
            live = {execution_id: execution for execution_id, (execution, _) in self._live.items()}
        return [self._info(live.get(r.id), r) for r in records], self.registry.count()

    def output(
        self, execution_id: str | None, offset: int = 0, limit: int | None = None
    ) -> tuple[str, int]:
        execution, record = self._find(execution_id)
        if execution is not None:
            return execution.output(offset, limit)
        return read_output(self.registry.folder(record.id) / "output.txt", offset, limit)

    def errors(self, execution_id: str) -> list[ErrorRecord]:
        """The whole error log (repeats folded, with their count)."""
        execution, record = self._find(execution_id)
        if execution is not None:
            return execution.errors()
        return self.registry.load_errors(record.id)

    # -- files -------------------------------------------------------------------------
    def work_path(self, execution_id: str | None, path: str = "") -> Path:
        """A file or folder of an execution's work directory; never anything outside it."""
        _, record = self._find(execution_id)
        work = (self.registry.folder(record.id) / WORK).resolve()
        relative = PurePosixPath(path.strip("/")) if path else PurePosixPath()
        if relative.is_absolute() or ".." in relative.parts:
            raise FileMissing(f"{path}: the path must stay inside the work directory")
        target = work.joinpath(*relative.parts)
        try:
            resolved = target.resolve()
            if not resolved.is_relative_to(work):
                raise FileMissing(f"{path}: the path leads outside the work directory")
            if not resolved.exists():
                raise FileMissing("File not found")
        except (OSError, ValueError):  # a name too long, a NUL byte: no such file either
            raise FileMissing("File not found") from None
        return resolved

    def listing(
        self, execution_id: str, path: str = "", last: int | None = None
    ) -> tuple[Path, list[DirectoryEntry]]:
        """A folder's entries, newest first (at most ``last``); a file lists nothing."""
        target = self.work_path(execution_id, path)
        if not target.is_dir():
            return target, []
        entries = []
        for child in target.iterdir():
            with contextlib.suppress(OSError):
                stat = child.stat()
                is_dir = child.is_dir()
                entries.append(
                    DirectoryEntry(
                        child.name,
                        "directory" if is_dir else "file",
                        int(stat.st_mtime * 1000),
                        None if is_dir else stat.st_size,
                    )
                )
        entries.sort(key=lambda e: e.modified, reverse=True)
        return target, entries[:last] if last is not None else entries

    # -- control -----------------------------------------------------------------------
    def cancel(self, execution_id: str, timeout: float = 30) -> ExecutionInfo:
        """Stop it; files and logs stay and the state reads ``cancelled``."""
        execution, _ = self._find(execution_id)
        if execution is not None:
            execution.cancel()
            execution.wait(timeout)
        return self.info(execution_id)

    def remove(self, execution_id: str | None, timeout: float = 30) -> None:
        """Cancel and delete, files included."""
        execution, record = self._find(execution_id)
        if execution is not None:
            execution.cancel()
            execution.wait(timeout)
        with self._lock:
            self._live.pop(record.id, None)
            self._logs.pop(record.id, None)
        self.engine.executions.pop(record.id, None)
        self.registry.remove(record.id)
        with self._lock:
            self._removals += 1
            self._ended_records.pop(record.id, None)

    def close(self) -> None:
        self.registry.close()


def _failure(execution: Execution) -> str | None:
    """Why an execution failed, naming the task as OpenMOLE does ("...capsule: model")."""
    if execution.error is None or execution.state is not State.FAILED:
        return execution.error
    task = execution.failed_task
    prefix = f"Mole execution failed when executing capsule: {task}. " if task else ""
    return prefix + execution.error


def _load_error(error: MoleError, work: Path) -> tuple[str, str]:
    """Message and stack trace of a script that did not load, with paths relative to its folder.

    A syntax error carries no trace of its own: its trace is Python's account of the
    error (file, line, caret), which is what the script's author needs.
    """
    trace = error.stack_trace
    if trace is None:
        cause = error.__cause__ or error.__context__ or error
        trace = "".join(traceback.format_exception_only(type(cause), cause))
    prefixes = {str(work) + "/", str(work.resolve()) + "/"}
    message = error.message
    for prefix in prefixes:
        message, trace = message.replace(prefix, ""), trace.replace(prefix, "")
    return message, trace


def _error_info(record: ErrorRecord) -> ErrorInfo:
    message = record.message if record.count == 1 else f"{record.message} (x{record.count})"
    return ErrorInfo(message, record.stack_trace, record.level.value)
