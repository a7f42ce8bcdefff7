"""The executions on disk: an SQLite index plus one folder per execution.

A server restart must lose nothing a user ran: finished executions keep their
state, output, errors and files, and an execution the restart interrupted
says so instead of vanishing. The index answers lists (newest first, paged)
without opening every folder; each folder holds the work directory, the output
and the error log.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from .state import CapsuleCounts, EnvironmentCounts, ErrorLevel, ErrorRecord, State

__all__ = ["ExecutionRecord", "Registry"]

INTERRUPTED = (
    "the execution was interrupted by a restart of the server; its results so far are kept"
)


@dataclasses.dataclass
class ExecutionRecord:
    """What is kept of an execution: identity, provenance, outcome and last counters."""

    id: str
    script: str
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    state: State = State.RUNNING
    submitted: float = dataclasses.field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    error: str | None = None
    stack_trace: str | None = None
    capsules: dict[str, CapsuleCounts] = dataclasses.field(default_factory=dict)
    environments: list[EnvironmentCounts] = dataclasses.field(default_factory=list)


_COLUMNS = (
    "id", "script", "tags", "state", "submitted", "started", "ended", "error", "stack_trace",
    "counters",
)  # fmt: skip


def _row(record: ExecutionRecord) -> tuple[Any, ...]:
    counters = {
        "capsules": {k: dataclasses.asdict(v) for k, v in record.capsules.items()},
        "environments": [dataclasses.asdict(e) for e in record.environments],
    }
    return (
        record.id, record.script, json.dumps(record.tags), record.state.value, record.submitted,
        record.started, record.ended, record.error, record.stack_trace, json.dumps(counters),
    )  # fmt: skip


def _record(row: sqlite3.Row) -> ExecutionRecord:
    counters = json.loads(row["counters"] or "{}")
    return ExecutionRecord(
        id=row["id"],
        script=row["script"],
        tags=json.loads(row["tags"] or "{}"),
        state=State(row["state"]),
        submitted=row["submitted"],
        started=row["started"],
        ended=row["ended"],
        error=row["error"],
        stack_trace=row["stack_trace"],
        capsules={k: CapsuleCounts(**v) for k, v in counters.get("capsules", {}).items()},
        environments=[EnvironmentCounts(**e) for e in counters.get("environments", [])],
    )


class Registry:
    """Thread-safe; one per state directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(directory / "index.sqlite", check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        with self._db:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS executions ("
                "id TEXT PRIMARY KEY, script TEXT, tags TEXT, state TEXT, submitted REAL, "
                "started REAL, ended REAL, error TEXT, stack_trace TEXT, counters TEXT)"
            )
            self._db.execute(
                "CREATE INDEX IF NOT EXISTS by_submission ON executions (submitted DESC)"
            )

    def folder(self, execution_id: str) -> Path:
        return self.directory / execution_id

    def save(self, record: ExecutionRecord) -> None:
        placeholders = ", ".join("?" for _ in _COLUMNS)
        with self._lock, self._db:
            self._db.execute(
                f"INSERT OR REPLACE INTO executions ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
                _row(record),
            )

    def get(self, execution_id: str) -> ExecutionRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM executions WHERE id = ?", (execution_id,)
            ).fetchone()
        return _record(row) if row else None

    def list(self, offset: int = 0, limit: int | None = None) -> list[ExecutionRecord]:
        """Newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM executions ORDER BY submitted DESC LIMIT ? OFFSET ?",
                (-1 if limit is None else limit, offset),
            ).fetchall()
        return [_record(r) for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM executions").fetchone()[0])

    def remove(self, execution_id: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM executions WHERE id = ?", (execution_id,))
        shutil.rmtree(self.folder(execution_id), ignore_errors=True)

    def mark_interrupted(self) -> list[str]:
        """Executions left running by a previous server read as failed, saying why."""
        now = time.time()
        with self._lock, self._db:
            ids = [
                r[0]
                for r in self._db.execute("SELECT id FROM executions WHERE state = ?", ("running",))
            ]
            self._db.execute(
                "UPDATE executions SET state = ?, error = ?, ended = COALESCE(ended, ?) "
                "WHERE state = ?",
                (State.FAILED.value, INTERRUPTED, now, State.RUNNING.value),
            )
        return ids

    def save_errors(self, execution_id: str, errors: list[ErrorRecord]) -> None:
        path = self.folder(execution_id) / "errors.json"
        data = [dict(dataclasses.asdict(e), level=e.level.value) for e in errors]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)

    def load_errors(self, execution_id: str) -> list[ErrorRecord]:
        path = self.folder(execution_id) / "errors.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return []
        return [ErrorRecord(**dict(e, level=ErrorLevel(e["level"]))) for e in data]

    def close(self) -> None:
        with self._lock:
            self._db.close()
