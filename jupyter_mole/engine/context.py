"""What the parts of a running execution share: its id, folders, counters, errors and output."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .output import OutputLog
from .state import ErrorLevel, ErrorLog, ErrorRecord, Progress

__all__ = ["ExecutionContext"]


@dataclasses.dataclass
class ExecutionContext:
    id: str
    work_directory: Path
    scratch_directory: Path
    output: OutputLog
    progress: Progress = dataclasses.field(default_factory=Progress)
    errors: ErrorLog = dataclasses.field(default_factory=ErrorLog)

    def report(
        self, environment: str, level: ErrorLevel, message: str, stack_trace: str | None = None
    ) -> None:
        self.errors.add(ErrorRecord(message, level, environment, stack_trace))
