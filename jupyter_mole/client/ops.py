"""The client's operations, each once, for the three kinds of server.

Each method is a generator of :mod:`core` instructions (see there): it says
which route to call for the server's kind (our server and OpenMOLE's /job API
take the /job routes, OpenMOLE's token API its POST routes) and what the answer
means. Our extensions are used only with our server; with OpenMOLE the client
does what it can without them (output is fetched whole and sliced) or raises
:class:`Unsupported`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from ..protocol import DirectoryEntry, ExecutionInfo, ExecutionState, ServiceInfo
from .core import JOB, MOLE, TOKEN, Blocking, Call, Op, Reply, Session, Sleep
from .errors import MoleClientError, Unsupported, WaitTimeout
from .files import ProgressReader, Upload, attachment_name, check_destination, place, scratch_beside

__all__ = ["Entries", "ErrorLog", "Executions", "LoggedError", "Operations"]


@dataclasses.dataclass
class LoggedError:
    """An entry of an execution's whole error log (our extension); repeats folded in ``count``."""

    message: str
    level: str
    environment: str | None = None
    stack_trace: str | None = None
    time: float | None = None  # seconds since the epoch
    count: int = 1

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> LoggedError:
        stamp = obj.get("time")
        return cls(
            str(obj.get("message", "")),
            str(obj.get("level", "FINE")),
            obj.get("environment"),
            obj.get("stack-trace", obj.get("stackTrace")),
            stamp / 1000 if isinstance(stamp, int | float) else None,
            int(obj.get("count", 1)),
        )


# Names for what the ``list`` methods' neighbours return: in a class that defines ``list``,
# ``list[...]`` in a later annotation would name the method.
Executions = list[str] | list[ExecutionInfo]
ErrorLog = list[LoggedError]
Entries = list[DirectoryEntry]


def _job(execution_id: str, *rest: str) -> str:
    return "/".join(["/job", quote(execution_id, safe=""), *rest])


def _work_path(path: str) -> str:
    """``path`` inside the work directory, checked here: a URL would drop its ``..`` silently."""
    relative = PurePosixPath(path.strip("/"))
    if ".." in relative.parts:
        raise ValueError(f"{path!r}: the path must stay inside the work directory")
    return "" if str(relative) == "." else str(relative)


def _tail(data: bytes, offset: int) -> tuple[str, int]:
    """What follows byte ``offset`` of a whole output, and the offset after it."""
    offset = max(0, min(offset, len(data)))
    return data[offset:].decode("utf-8", "replace"), len(data)


def _expect(reply: Reply, kind: type, what: str) -> Any:
    body = reply.json()
    if not isinstance(body, kind):
        raise MoleClientError(
            f"{what}: the server's answer is not the JSON expected ({reply.text[:200]!r})",
            status=reply.status,
        )
    return body


class Operations:
    """What a client can ask; ``session`` knows the server's kind and holds the token."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def _request(self, call: Call) -> Op[Reply]:
        return self.session.request(call)

    def _only_ours(self, what: str, alternative: str = "") -> Op[str]:
        kind = yield from self.session.detect()
        if kind != MOLE:
            raise Unsupported(
                f"{what} is a jupyter-mole extension; this server ({kind}) does not offer it",
                hint=alternative or None,
            )
        return kind

    # -- about the server ---------------------------------------------------------------
    def detect(self) -> Op[str]:
        return self.session.detect()

    def service_info(self) -> Op[ServiceInfo]:
        kind = yield from self.session.detect()
        if self.session.info is not None:  # ours: ask again, it may have changed
            reply = yield from self.session.request(Call("GET", "/service-info"), auth=False)
            self.session.info = ServiceInfo.from_json(_expect(reply, dict, "GET /service-info"))
            return self.session.info
        token = kind == TOKEN or self.session.token is not None
        return ServiceInfo(
            name="openmole",
            version="",
            generations=["job" if kind == JOB else "token"],
            engine="openmole",
            auth="token" if token else "none",
            features=["propfind"] if kind == JOB else [],
        )

    # -- executions ---------------------------------------------------------------------
    def start(
        self,
        source: str | os.PathLike[str],
        script: str,
        tags: dict[str, str] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Op[str]:
        kind = yield from self.session.detect()
        upload: Upload = yield Blocking(Upload(source, script).prepare)
        try:
            with open(upload.path, "rb") as raw:
                reader = ProgressReader(raw, upload.size, progress)
                fields = {"script": script}
                if tags and kind == MOLE:  # OpenMOLE keeps no tags
                    fields["tags"] = json.dumps({str(k): str(v) for k, v in tags.items()})
                files = {"workDirectory": ("workDirectory.tgz", reader, "application/gzip")}
                route = "/start" if kind == TOKEN else "/job"
                reply = yield from self._request(Call("POST", route, data=fields, files=files))
        finally:
            upload.cleanup()
        return str(_expect(reply, dict, f"POST {route}")["id"])

    def state(self, execution_id: str) -> Op[ExecutionState]:
        kind = yield from self.session.detect()
        if kind == TOKEN:
            call = Call("POST", "/state", data={"id": execution_id})
        else:
            call = Call("GET", _job(execution_id, "state"))
        reply = yield from self._request(call)
        return ExecutionState.from_json(_expect(reply, dict, call.what))

    def info(self, execution_id: str) -> Op[ExecutionInfo]:
        yield from self._only_ours("execution details", "use state(id), which works everywhere")
        reply = yield from self._request(Call("GET", _job(execution_id)))
        return ExecutionInfo.from_json(_expect(reply, dict, "GET /job/:id"))

    def output(self, execution_id: str, offset: int = 0) -> Op[tuple[str, int]]:
        kind = yield from self.session.detect()
        if kind == MOLE:
            params = {"offset": str(offset)} if offset else None
            reply = yield from self._request(
                Call("GET", _job(execution_id, "output"), params=params)
            )
            try:
                end = int(reply.headers.get("x-next-offset", ""))
            except ValueError:
                end = offset + len(reply.content)
            return reply.text, end
        if kind == JOB:
            reply = yield from self._request(Call("GET", _job(execution_id, "output")))
            return _tail(reply.content, offset)
        reply = yield from self._request(Call("POST", "/output", data={"id": execution_id}))
        text = _expect(reply, dict, "POST /output").get("output", "")
        return _tail(str(text).encode("utf-8"), offset)

    def download(
        self,
        execution_id: str,
        path: str = "",
        dest: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
    ) -> Op[Path]:
        path = _work_path(path)
        kind = yield from self.session.detect()
        name = PurePosixPath(path).name
        target = Path(dest) if dest is not None else Path(name or execution_id)
        check_destination(target, overwrite)
        part = scratch_beside(target, "part")
        try:
            with open(part, "xb") as sink:
                if kind == TOKEN:
                    call = Call("POST", "/download", data={"id": execution_id, "path": path})
                else:
                    route = _job(execution_id, "workDirectory", quote(path, safe="/"))
                    call = Call("GET", route)
                reply = yield from self._request(dataclasses.replace(call, sink=sink))
            filename = attachment_name(reply.headers)
            if kind == TOKEN:
                folder = filename == "archive.tgz" if filename else not name
            else:
                folder = not name or filename == f"{name}.tgz"
            gunzip = kind == TOKEN and not folder
            gunzip = gunzip and "gzip" not in reply.headers.get("content-encoding", "")
            result: Path = yield Blocking(
                lambda: place(part, target, folder=folder, gunzip=gunzip, overwrite=overwrite)
            )
        finally:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
        return result

    def list(
        self, details: bool = False, offset: int = 0, limit: int | None = None
    ) -> Op[Executions]:
        kind = yield from self.session.detect()
        if details and kind == MOLE:
            params = {"details": "1", "offset": str(offset)}
            if limit is not None:
                params["limit"] = str(limit)
            reply = yield from self._request(Call("GET", "/job", params=params))
            return [ExecutionInfo.from_json(o) for o in _expect(reply, list, "GET /job")]
        call = Call("POST", "/list") if kind == TOKEN else Call("GET", "/job")
        reply = yield from self._request(call)
        ids = [str(o["id"]) for o in _expect(reply, list, call.what) if isinstance(o, dict)]
        ids = ids[offset : None if limit is None else offset + limit]
        if details:  # OpenMOLE lists ids only
            return [ExecutionInfo(id=i) for i in ids]
        return ids

    def errors(self, execution_id: str) -> Op[ErrorLog]:
        yield from self._only_ours(
            "the whole error log", "use state(id) for the errors since the last query"
        )
        reply = yield from self._request(Call("GET", _job(execution_id, "errors")))
        return [LoggedError.from_json(o) for o in _expect(reply, list, "GET /job/:id/errors")]

    def listing(self, execution_id: str, path: str = "", last: int | None = None) -> Op[Entries]:
        path = _work_path(path)
        kind = yield from self.session.detect()
        if kind == TOKEN:
            raise Unsupported(
                "listing a work directory needs the /job API (PROPFIND); "
                "OpenMOLE's token API has none",
                hint="use download(id, path) to fetch a folder whole",
            )
        route = _job(execution_id, "workDirectory", quote(path, safe="/"))
        params = {"last": str(last)} if last is not None else None
        reply = yield from self._request(Call("PROPFIND", route, params=params))
        body = _expect(reply, dict, "PROPFIND")
        if body.get("type") == "directory":
            return [DirectoryEntry.from_json(e) for e in body.get("entries", [])]
        return [DirectoryEntry.from_json({**body, "name": PurePosixPath(path).name})]

    def cancel(self, execution_id: str) -> Op[ExecutionInfo]:
        kind = yield from self.session.detect()
        if kind != MOLE:
            raise Unsupported(
                f"this server ({kind}) does not offer cancel without delete: OpenMOLE's REST "
                "API can only cancel an execution by removing it with its files",
                hint="use remove(id) to cancel and delete it",
            )
        reply = yield from self._request(Call("POST", _job(execution_id, "cancel")))
        return ExecutionInfo.from_json(_expect(reply, dict, "POST /job/:id/cancel"))

    def remove(self, execution_id: str) -> Op[None]:
        kind = yield from self.session.detect()
        if kind == TOKEN:
            yield from self._request(Call("POST", "/remove", data={"id": execution_id}))
        else:
            yield from self._request(Call("DELETE", _job(execution_id)))

    def wait(
        self,
        execution_id: str,
        poll: float = 0.5,
        timeout: float | None = None,
        on_state: Callable[[ExecutionState], None] | None = None,
    ) -> Op[ExecutionState]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = yield from self.state(execution_id)
            if on_state is not None:
                on_state(state)
            if state.done:
                return state
            pause = poll
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(
                        f"execution {execution_id} is still {state.state} after {timeout:g} s",
                        hint="it goes on running; wait again, or cancel it",
                    )
                pause = min(poll, left)
            yield Sleep(pause)
