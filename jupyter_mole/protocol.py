"""The wire model of OpenMOLE's REST API, and its two JSON dialects.

Shared by the server and the client, so that both read and write one model.
OpenMOLE's token API (generation 1) writes camelCase keys (``stackTrace``); its
current /job API (generation 2) writes kebab-case keys (``stack-trace``). Our
additions (a ``cancelled`` state, counters in every state, execution details)
are additive: a client of either generation ignores what it does not know.
Readers accept both dialects.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

__all__ = [
    "CapsuleState",
    "Dialect",
    "DirectoryEntry",
    "EnvironmentStatus",
    "ErrorInfo",
    "ExecutionInfo",
    "ExecutionState",
    "ServiceInfo",
    "Token",
    "error_body",
    "read_error",
]


class Dialect(enum.Enum):
    CAMEL = "camel"  # the token API: stackTrace
    KEBAB = "kebab"  # the /job API: stack-trace


def _key(name: str, dialect: Dialect) -> str:
    if dialect is Dialect.CAMEL:
        return name
    return "".join("-" + c.lower() if c.isupper() else c for c in name)


def _get(obj: dict[str, Any], name: str, default: Any = None) -> Any:
    """A field read in either dialect."""
    if name in obj:
        return obj[name]
    return obj.get(_key(name, Dialect.KEBAB), default)


@dataclasses.dataclass
class Token:
    token: str
    duration: int  # milliseconds

    def to_json(self) -> dict[str, Any]:
        return {"token": self.token, "duration": self.duration}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Token:
        return cls(str(obj["token"]), int(obj.get("duration", 0)))


@dataclasses.dataclass
class ErrorInfo:
    """An error as the API carries it: a message, maybe a stack trace and a level."""

    message: str
    stack_trace: str | None = None
    level: str | None = None

    def to_json(self, dialect: Dialect = Dialect.CAMEL) -> dict[str, Any]:
        obj: dict[str, Any] = {"message": self.message}
        if self.stack_trace is not None:
            obj[_key("stackTrace", dialect)] = self.stack_trace
        if self.level is not None:
            obj["level"] = self.level
        return obj

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ErrorInfo:
        return cls(str(obj.get("message", "")), _get(obj, "stackTrace"), obj.get("level"))


def error_body(
    message: str, stack_trace: str | None = None, dialect: Dialect = Dialect.CAMEL
) -> dict[str, Any]:
    """The JSON body of an error response: ``{"message": ..., "stackTrace"?: ...}``."""
    return ErrorInfo(message, stack_trace).to_json(dialect)


def read_error(body: Any) -> ErrorInfo | None:
    """The error carried by a response body, if it looks like one."""
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return ErrorInfo.from_json(body)
    return None


@dataclasses.dataclass
class CapsuleState:
    ready: int = 0
    running: int = 0
    completed: int = 0

    def to_json(self) -> dict[str, int]:
        return {"ready": self.ready, "running": self.running, "completed": self.completed}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> CapsuleState:
        return cls(
            int(obj.get("ready", 0)), int(obj.get("running", 0)), int(obj.get("completed", 0))
        )


@dataclasses.dataclass
class EnvironmentStatus:
    name: str | None
    submitted: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    errors: list[ErrorInfo] = dataclasses.field(default_factory=list)

    def to_json(self, dialect: Dialect = Dialect.CAMEL) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        if self.name is not None:
            obj["name"] = self.name
        obj.update(
            submitted=self.submitted, running=self.running, done=self.done, failed=self.failed
        )
        obj["errors"] = [e.to_json(dialect) for e in self.errors]
        return obj

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> EnvironmentStatus:
        return cls(
            obj.get("name"),
            int(obj.get("submitted", 0)),
            int(obj.get("running", 0)),
            int(obj.get("done", 0)),
            int(obj.get("failed", 0)),
            [ErrorInfo.from_json(e) for e in obj.get("errors", [])],
        )


RUNNING, FINISHED, FAILED, CANCELLED = "running", "finished", "failed", "cancelled"


@dataclasses.dataclass
class ExecutionState:
    """What /state answers. ``state`` is running, finished, failed or (ours) cancelled."""

    state: str
    ready: int = 0
    running: int = 0
    completed: int = 0
    capsules: list[tuple[str, CapsuleState]] = dataclasses.field(default_factory=list)
    environments: list[EnvironmentStatus] = dataclasses.field(default_factory=list)
    error: ErrorInfo | None = None

    @property
    def done(self) -> bool:
        return self.state != RUNNING

    @property
    def total(self) -> int:
        """Every job known so far: the denominator of a progress bar."""
        return self.ready + self.running + self.completed

    def to_json(self, dialect: Dialect = Dialect.CAMEL) -> dict[str, Any]:
        obj: dict[str, Any] = {"state": self.state}
        if self.state == FAILED and self.error is not None:
            obj["error"] = self.error.to_json(dialect)
        obj.update(ready=self.ready, running=self.running, completed=self.completed)
        obj["capsules"] = [[name, counts.to_json()] for name, counts in self.capsules]
        obj["environments"] = [e.to_json(dialect) for e in self.environments]
        return obj

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ExecutionState:
        error = obj.get("error")
        capsules = []
        for item in obj.get("capsules", []):
            # OpenMOLE writes a pair [name, counts]; tolerate {"name":..., ...} too.
            if isinstance(item, (list, tuple)) and len(item) == 2:
                capsules.append((str(item[0]), CapsuleState.from_json(item[1])))
            elif isinstance(item, dict):
                capsules.append((str(item.get("name", "")), CapsuleState.from_json(item)))
        return cls(
            state=str(obj.get("state", "")),
            ready=int(obj.get("ready", 0)),
            running=int(obj.get("running", 0)),
            completed=int(obj.get("completed", 0)),
            capsules=capsules,
            environments=[EnvironmentStatus.from_json(e) for e in obj.get("environments", [])],
            error=ErrorInfo.from_json(error) if isinstance(error, dict) else None,
        )


@dataclasses.dataclass
class ExecutionInfo:
    """An execution as our detailed list shows it (an extension: OpenMOLE lists only ids)."""

    id: str
    state: str | None = None
    script: str | None = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    submitted: float | None = None
    started: float | None = None
    ended: float | None = None
    ready: int = 0
    running: int = 0
    completed: int = 0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        obj = dataclasses.asdict(self)
        return {k: v for k, v in obj.items() if v is not None}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ExecutionInfo:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in fields})


@dataclasses.dataclass
class DirectoryEntry:
    """A file or folder of a work directory, as PROPFIND lists it (``modified`` in ms)."""

    name: str
    type: str  # "file" or "directory"
    modified: int
    size: int | None = None

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"name": self.name}
        if self.size is not None:
            obj["size"] = self.size
        obj.update(modified=self.modified, type=self.type)
        return obj

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> DirectoryEntry:
        return cls(
            str(obj["name"]),
            str(obj.get("type", "file")),
            int(obj.get("modified", 0)),
            obj.get("size"),
        )


@dataclasses.dataclass
class ServiceInfo:
    """What a server says of itself at /service-info (ours only; OpenMOLE has none)."""

    name: str
    version: str
    generations: list[str]
    engine: str
    auth: str
    features: list[str]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ServiceInfo:
        return cls(
            str(obj.get("name", "")),
            str(obj.get("version", "")),
            list(obj.get("generations", [])),
            str(obj.get("engine", "")),
            str(obj.get("auth", "")),
            list(obj.get("features", [])),
        )
