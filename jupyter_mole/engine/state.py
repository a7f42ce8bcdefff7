"""What an execution reports: job counters, environment counters, errors, and its state.

These are the engine's own records, free of any wire format; the REST layer
turns a :class:`Snapshot` into either JSON dialect of OpenMOLE's API.
"""

from __future__ import annotations

import array
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
    number of readers each get every error. Repeats of the same message and
    level are folded into one record with a count, so a thousand failing jobs
    do not bury the first distinct error: :meth:`all` is that folded log.

    Each occurrence is also one *event* in an append-only sequence that points
    at its folded record, and a reader's cursor is a position in it. So a
    reader who has seen a record still learns of its repeats: the next read
    gives the record again, counting the occurrences since that reader's last
    read. Events every reader has passed are dropped; a new reader starts from
    the folded log, not from the events.
    """

    def __init__(self) -> None:
        self._records: list[ErrorRecord] = []
        self._index: dict[tuple[str, str, ErrorLevel], int] = {}
        self._events = array.array("I")  # per occurrence, its record's index in _records
        self._dropped = 0  # events dropped from the front: absolute position of _events[0]
        self._cursors: dict[str, int] = {}  # absolute event positions
        self._lock = threading.Lock()

    def add(self, record: ErrorRecord) -> None:
        key = (record.environment, record.message, record.level)
        with self._lock:
            i = self._index.get(key)
            if i is None:
                i = self._index[key] = len(self._records)
                self._records.append(record)
            else:
                old = self._records[i]
                self._records[i] = dataclasses.replace(old, count=old.count + record.count)
            if self._cursors:  # a reader yet to come starts from the folded log
                self._events.extend([i] * record.count)

    def all(self) -> list[ErrorRecord]:
        with self._lock:
            return list(self._records)

    def since_last_read(self, reader: str) -> list[ErrorRecord]:
        """What happened since ``reader`` last asked (the whole folded log the first time).

        One record per distinct error, in the order it first happened since the
        last read, its ``count`` the occurrences since then: a reader adding up
        the counts it is given sees every occurrence once.
        """
        with self._lock:
            end = self._dropped + len(self._events)
            start = self._cursors.get(reader)
            self._cursors[reader] = end
            if start is None:
                result = list(self._records)
            else:
                counts: dict[int, int] = {}
                for i in self._events[start - self._dropped :]:
                    counts[i] = counts.get(i, 0) + 1
                result = [dataclasses.replace(self._records[i], count=n) for i, n in counts.items()]
            self._trim()
            return result

    def _trim(self) -> None:
        """Drop the events every reader has passed (when they are many enough to matter)."""
        passed = min(self._cursors.values()) - self._dropped
        if passed >= 1024 and passed * 2 >= len(self._events):
            del self._events[:passed]
            self._dropped += passed


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
