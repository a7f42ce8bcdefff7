"""OpenMOLE's token API (generation 1): every route a POST, parameters in the query or the form."""

from __future__ import annotations

import json
from typing import Any

import tornado.web

from .. import archive
from ..protocol import Token
from .base import BaseHandler
from .manager import ServiceError
from .uploads import BadBody, BodyTooLarge, StreamingBody

__all__ = ["ROUTES", "StreamingStart"]


class TokenHandler(BaseHandler):
    async def post(self) -> None:
        address = self.request.remote_ip or ""
        wait = self.server.limiter.check(address)
        if wait is not None:
            self.set_header("Retry-After", str(int(wait) + 1))
            self.send_error_message(
                429, f"too many wrong passwords from {address}: try again in {int(wait) + 1} s"
            )
            return
        password = self.param("password")
        if password is None:
            self.send_error_message(417, "No password sent with request")
            return
        if self.server.password is not None and not self.server.password.verify(password):
            self.server.limiter.failure(address)
            self.send_error_message(403, "Server password is incorrect")
            return
        self.server.limiter.success(address)
        token = self.server.tokens.issue()
        self.send_json(Token(token.token, token.duration_ms).to_json(), 202)


@tornado.web.stream_request_body
class StreamingStart(BaseHandler):
    """Receives an upload as it comes (to disk), then starts the execution."""

    body: StreamingBody | None = None

    def prepare(self) -> None:
        self.request.connection.set_max_body_size(self.server.max_upload + 1024 * 1024)
        try:
            self.body = StreamingBody(
                self.request.headers.get("Content-Type", ""),
                self.server.spool,
                self.server.max_upload,
            )
        except BadBody as e:
            self.send_error_message(400, str(e))

    def data_received(self, chunk: bytes) -> None:
        if self.body is None or self._finished:
            return
        try:
            self.body.feed(chunk)
        except BodyTooLarge as e:
            self.send_error_message(413, str(e))
        except BadBody as e:
            self.send_error_message(400, str(e))

    def on_finish(self) -> None:
        if self.body is not None:
            self.body.cleanup()

    def on_connection_close(self) -> None:
        if self.body is not None:
            self.body.cleanup()

    def finished_body(self) -> bool:
        """Parse the end of the body; False if an answer (an error) was already sent."""
        if self._finished or self.body is None:
            return False
        try:
            self.body.finish()
        except (BadBody, BodyTooLarge) as e:
            self.send_error_message(400, str(e))
            return False
        return True

    def form(self, name: str) -> str | None:
        assert self.body is not None
        value = self.body.fields.get(name)
        return value if value is not None else self.get_query_argument(name, None)

    def tags(self) -> dict[str, str]:
        """``tag=k=v`` parameters (repeatable) and a ``tags`` JSON object, our extension."""
        tags: dict[str, str] = {}
        raw = self.form("tags")
        if raw:
            try:
                parsed: Any = json.loads(raw)
            except ValueError:
                raise ServiceError("tags must be a JSON object of strings") from None
            if not isinstance(parsed, dict):
                raise ServiceError("tags must be a JSON object of strings")
            tags.update({str(k): str(v) for k, v in parsed.items()})
        for item in self.get_query_arguments("tag"):
            key, _, value = item.partition("=")
            tags[key] = value
        return tags

    async def start_execution(self) -> str | None:
        """The id of the new execution, or None when an error answer was sent."""
        if not self.finished_body() or not self.authenticated(self.form("token")):
            return None
        assert self.body is not None
        try:
            return await self.blocking(
                self.manager.start,
                self.form("script"),
                self.body.files.get("workDirectory"),
                self.tags(),
            )
        except ServiceError as e:
            self.fail(e)
            return None


class StartHandler(StreamingStart):
    async def post(self) -> None:
        execution_id = await self.start_execution()
        if execution_id is not None:
            self.send_json({"id": execution_id})


class StateHandler(BaseHandler):
    async def post(self) -> None:
        if self.authenticated():
            try:
                state = self.manager.state(self.param("id"), self.reader())
            except ServiceError as e:
                return self.fail(e)
            self.send_json(state.to_json(self.dialect))


class OutputHandler(BaseHandler):
    async def post(self) -> None:
        if self.authenticated():
            try:
                text, end = self.manager.output(
                    self.param("id"), self.int_param("offset", 0) or 0, self.int_param("limit")
                )
            except ServiceError as e:
                return self.fail(e)
            self.set_header("X-Next-Offset", str(end))
            self.send_json({"output": text})


class DownloadHandler(BaseHandler):
    """A file comes gzip-compressed (the client gunzips); a folder as a tar.gz."""

    not_found_status = 404

    async def post(self) -> None:
        if not self.authenticated():
            return
        try:
            path = self.manager.work_path(self.param("id"), self.param("path", "") or "")
        except ServiceError as e:
            return self.fail(e)
        self.set_header("Content-Type", "application/octet-stream")
        if path.is_dir():
            self.set_header("Content-Disposition", "attachment; filename=archive.tgz")
            await self.send_chunks(archive.stream_directory(path))
        else:
            self.set_header("Content-Disposition", f'attachment; filename="{path.name}.gz"')
            await self.send_chunks(archive.gzip_file_chunks(path))


class RemoveHandler(BaseHandler):
    async def post(self) -> None:
        if self.authenticated():
            try:
                await self.blocking(self.manager.remove, self.param("id"))
            except ServiceError as e:
                return self.fail(e)
            self.set_status(200)
            self.finish()


class ListHandler(BaseHandler):
    async def post(self) -> None:
        if self.authenticated():
            self.send_json([{"id": i} for i in self.manager.ids()])


ROUTES = [
    (r"/token", TokenHandler),
    (r"/start", StartHandler),
    (r"/state", StateHandler),
    (r"/output", OutputHandler),
    (r"/download", DownloadHandler),
    (r"/remove", RemoveHandler),
    (r"/list", ListHandler),
]
