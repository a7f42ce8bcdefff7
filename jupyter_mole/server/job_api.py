"""OpenMOLE's /job API (generation 2), with the same token, and our extensions beside it.

OpenMOLE today answers these routes without authentication; ours take the
token as ``Authorization: Bearer`` or ``token=``. Our extensions are additive:
execution details, cancel without delete, output from an offset, the whole
error log, and a self-description at /service-info.
"""

from __future__ import annotations

import json
from importlib import resources

from .. import archive
from ..protocol import Dialect
from .base import BaseHandler, stream_chunks
from .manager import ServiceError
from .token_api import StreamingStart

__all__ = ["ROUTES"]


class JobBase(BaseHandler):
    dialect = Dialect.KEBAB
    not_found_status = 404


class JobsHandler(StreamingStart):
    """POST /job starts an execution (multipart); GET /job lists them."""

    dialect = Dialect.KEBAB
    not_found_status = 404

    async def post(self) -> None:
        execution_id = await self.start_execution()
        if execution_id is not None:
            self.send_json({"id": execution_id})

    async def get(self) -> None:
        if not self.authenticated():
            return
        if self.get_query_argument("details", "") not in ("1", "true", "yes"):
            self.send_json([{"id": i} for i in self.manager.ids()])
            return
        try:
            offset = self.int_param("offset", 0) or 0
            limit = self.int_param("limit")
        except ServiceError as e:
            return self.fail(e)
        infos, total = self.manager.list(offset, limit)
        self.set_header("X-Total-Count", str(total))
        self.send_json([i.to_json() for i in infos])


class JobHandler(JobBase):
    """GET /job/:id: details (ours); DELETE /job/:id: cancel and delete."""

    async def get(self, execution_id: str) -> None:
        if self.authenticated():
            try:
                self.send_json(self.manager.info(execution_id).to_json())
            except ServiceError as e:
                self.fail(e)

    async def delete(self, execution_id: str) -> None:
        if self.authenticated():
            try:
                await self.blocking(self.manager.remove, execution_id)
            except ServiceError as e:
                return self.fail(e)
            self.set_status(200)
            self.finish()


class JobStateHandler(JobBase):
    async def get(self, execution_id: str) -> None:
        if self.authenticated():
            try:
                state = self.manager.state(execution_id, self.reader())
            except ServiceError as e:
                return self.fail(e)
            self.send_json(state.to_json(self.dialect))


class JobOutputHandler(JobBase):
    """The whole output as text; ``?offset=n`` for what follows byte n (``X-Next-Offset``)."""

    async def get(self, execution_id: str) -> None:
        if not self.authenticated():
            return
        try:
            text, end = self.manager.output(
                execution_id, self.int_param("offset", 0) or 0, self.int_param("limit")
            )
        except ServiceError as e:
            return self.fail(e)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.set_header("X-Next-Offset", str(end))
        self.finish(text.encode("utf-8"))


class JobErrorsHandler(JobBase):
    """Every environment error of the execution, repeats folded with their count (ours)."""

    async def get(self, execution_id: str) -> None:
        if not self.authenticated():
            return
        try:
            errors = self.manager.errors(execution_id)
        except ServiceError as e:
            return self.fail(e)
        self.send_json(
            [
                {
                    "message": e.message,
                    "level": e.level.value,
                    "environment": e.environment,
                    "stack-trace": e.stack_trace,
                    "time": int(e.time * 1000),
                    "count": e.count,
                }
                for e in errors
            ]
        )


class JobCancelHandler(JobBase):
    """POST /job/:id/cancel: stop it, keep its files and logs (ours)."""

    async def post(self, execution_id: str) -> None:
        if self.authenticated():
            try:
                info = await self.blocking(self.manager.cancel, execution_id)
            except ServiceError as e:
                return self.fail(e)
            self.send_json(info.to_json())


class WorkDirectoryHandler(JobBase):
    """A file's raw bytes, or a folder as a tar.gz; PROPFIND describes them."""

    SUPPORTED_METHODS = ("GET", "PROPFIND")

    async def get(self, execution_id: str, path: str) -> None:
        if not self.authenticated():
            return
        try:
            target = self.manager.work_path(execution_id, path)
        except ServiceError as e:
            return self.fail(e)
        self.set_header("Content-Type", "application/octet-stream")
        if target.is_dir():
            name = target.name if path.strip("/") else "workDirectory"
            self.set_header("Content-Disposition", f'attachment; filename="{name}.tgz"')
            await self.send_chunks(archive.stream_directory(target))
        else:
            self.set_header("Content-Disposition", f'attachment; filename="{target.name}"')
            self.set_header("Content-Length", str(target.stat().st_size))
            await self.send_chunks(stream_chunks(target))

    async def propfind(self, execution_id: str, path: str) -> None:
        if not self.authenticated():
            return
        try:
            last = self.int_param("last")
            target, entries = self.manager.listing(execution_id, path, last)
        except ServiceError as e:
            return self.fail(e)
        stat = target.stat()
        modified = int(stat.st_mtime * 1000)
        if target.is_dir():
            self.send_json(
                {
                    "entries": [e.to_json() for e in entries],
                    "modified": modified,
                    "type": "directory",
                }
            )
        else:
            self.send_json({"size": stat.st_size, "modified": modified, "type": "file"})


class ServiceInfoHandler(BaseHandler):
    """What this server is, without a token, so that a client can tell whom it talks to."""

    async def get(self) -> None:
        self.send_json(self.server.service_info)


class OpenAPIHandler(BaseHandler):
    async def get(self) -> None:
        text = resources.files("jupyter_mole.server").joinpath("openapi.json").read_text()
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(json.loads(text)))


ROUTES = [
    (r"/job", JobsHandler),
    (r"/job/([^/]+)", JobHandler),
    (r"/job/([^/]+)/state", JobStateHandler),
    (r"/job/([^/]+)/output", JobOutputHandler),
    (r"/job/([^/]+)/errors", JobErrorsHandler),
    (r"/job/([^/]+)/cancel", JobCancelHandler),
    (r"/job/([^/]+)/workDirectory/?(.*)", WorkDirectoryHandler),
    (r"/service-info", ServiceInfoHandler),
    (r"/openapi.json", OpenAPIHandler),
]
