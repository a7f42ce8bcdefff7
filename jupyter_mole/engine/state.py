"""What an execution reports: job counters, environment counters, errors, and its state.

These are the engine's own records, free of any wire format; the REST layer
turns a :class:`Snapshot` into either JSON dialect of OpenMOLE's API.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
import time

__all__ = [
    "CapsuleCounts",
    "EnvironmentCounts",
    "ErrorLevel",
    "ErrorLog",
    "ErrorRecord",
    "Progress",
    "Snapshot",
    "State",
]


class State(enum.StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ErrorLevel(enum.StrEnum):
    """OpenMOLE's levels: SEVERE for what the user must fix, WARNING for a resubmitted job."""

    SEVERE = "SEVERE"
    WARNING = "WARNING"
    FINE = "FINE"


@dataclasses.dataclass
class CapsuleCounts:
    """Jobs of one task: waiting to run, running, completed."""

    ready: int = 0
    running: int = 0
    completed: int = 0


@dataclasses.dataclass
class EnvironmentCounts:
    """What an environment was handed (jobs or groups of jobs); done and failed are cumulative."""

    name: str
    submitted: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0


@dataclasses.dataclass(frozen=True)
class ErrorRecord:
    message: str
    level: ErrorLevel
    environment: str
    stack_trace: str | None = None
    time: float = dataclasses.field(default_factory=time.time)
    count: int = 1


class ErrorLog:
    """Every environment error of an execution, with an independent cursor per reader.

    OpenMOLE keeps one cursor, so two pollers steal each other's errors; here any
    number of readers each get every error once. Repeats of the same message
    and level are folded into one record with a count, so a thousand failing
    jobs do not bury the first distinct error.
    """

    def __init__(self) -> None:
        self._records: list[ErrorRecord] = []
        self._index: dict[tuple[str, str, ErrorLevel], int] = {}
        self._cursors: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, record: ErrorRecord) -> None:
        key = (record.environment, record.message, record.level)
        with self._lock:
            i = self._index.get(key)
            if i is None:
                self._index[key] = len(self._records)
                self._records.append(record)
            else:
                old = self._records[i]
                self._records[i] = dataclasses.replace(old, count=old.count + 1)

    def all(self) -> list[ErrorRecord]:
        with self._lock:
            return list(self._records)

    def since_last_read(self, reader: str) -> list[ErrorRecord]:
        """The records added since ``reader`` last asked (all of them the first time)."""
        with self._lock:
            start = self._cursors.get(reader, 0)
            self._cursors[reader] = len(self._records)
            return self._records[start:]


@dataclasses.dataclass
class Snapshot:
    """An execution's state at one moment; what /state reports."""

    id: str
    state: State
    capsules: dict[str, CapsuleCounts]
    environments: list[EnvironmentCounts]
    error: str | None = None
    stack_trace: str | None = None
    total: int | None = None
    started: float | None = None
    ended: float | None = None

    @property
    def ready(self) -> int:
        return sum(c.ready for c in self.capsules.values())

    @property
    def running(self) -> int:
        return sum(c.running for c in self.capsules.values())

    @property
    def completed(self) -> int:
        return sum(c.completed for c in self.capsules.values())


class Progress:
    """The live counters of one execution, updated by the engine's loop, read by anyone."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.capsules: dict[str, CapsuleCounts] = {}
        self.environments: dict[str, EnvironmentCounts] = {}

    def capsule(self, name: str) -> CapsuleCounts:
        counts = self.capsules.get(name)
        if counts is None:
            with self.lock:
                counts = self.capsules.setdefault(name, CapsuleCounts())
        return counts

    def environment(self, name: str) -> EnvironmentCounts:
        counts = self.environments.get(name)
        if counts is None:
            with self.lock:
                counts = self.environments.setdefault(name, EnvironmentCounts(name))
        return counts

    def copy(self) -> tuple[dict[str, CapsuleCounts], list[EnvironmentCounts]]:
        with self.lock:
            return (
                {k: dataclasses.replace(v) for k, v in self.capsules.items()},
                [dataclasses.replace(v) for v in self.environments.values()],
            )

    def settle(self) -> None:
        """An execution that stopped early has nothing waiting or running any more."""
        with self.lock:
            for counts in self.capsules.values():
                counts.ready = counts.running = 0
            for env in self.environments.values():
                env.submitted = env.running = 0
