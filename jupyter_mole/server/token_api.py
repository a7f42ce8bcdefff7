"""OpenMOLE's token API (generation 1): every route a POST, parameters in the query or the form."""

from __future__ import annotations

import json
from asyncio import Future
from typing import Any

import tornado.web
from tornado.ioloop import IOLoop

from .. import archive
from ..protocol import Token, error_body
from .auth import bearer_or_query
from .base import BaseHandler, http_error_message
from .manager import ServiceError
from .uploads import BadBody, BodyTooLarge, FieldTooLarge, StreamingBody

__all__ = ["ROUTES", "StreamingStart"]


class TokenHandler(BaseHandler):
    async def post(self) -> None:
        address = self.request.remote_ip or ""
        wait = self.server.limiter.check(address)
        if wait is not None:
            seconds = int(wait) + 1
            self.send_error_message(
                429,
                f"too many wrong passwords from {address}: try again in {seconds} s",
                headers={"Retry-After": str(seconds)},
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
    # A mistake found in the body (malformed multipart...) is answered once the body is in:
    # the connection stays usable. An upload that is refused whole (over the cap, a bad
    # or undecodable token) is answered at once, without reading it; the connection is then
    # closed, but only once the body has ended or LINGER seconds have passed, as web servers'
    # "lingering close" does: closing on a client still sending makes its system reset the
    # connection, often before the client has read the answer. Any other answer given before
    # the body is in (a method tornado refuses at once, a 500 in prepare) says
    # ``Connection: close`` too: see ``flush``.
    body_error: tuple[int, str] | None = None
    answered_early = False
    LINGER = 2.0

    def prepare(self) -> None:
        cap = self.server.max_upload
        self.request.connection.set_max_body_size(cap + 1024 * 1024)
        length = self.request.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > cap:
            return self.answer_early(413, BodyTooLarge.message(cap))
        try:
            query_token = self.get_query_argument("token", None)
        except tornado.web.HTTPError as e:  # not UTF-8: the 400 must not wait for the body
            return self.answer_early(e.status_code, http_error_message(e))
        early = bearer_or_query(self.request.headers.get("Authorization"), query_token, None)
        password = self.server.password is not None
        if early is not None and password and not self.server.tokens.check(early):
            return self.answer_early(401, "This service requires a valid token")
        try:
            self.body = StreamingBody(
                self.request.headers.get("Content-Type", ""),
                self.server.spool,
                self.server.max_upload,
            )
        except BadBody as e:
            self.body_error = (400, str(e))

    def answer_early(self, status: int, message: str) -> None:
        """Answer now (``Connection: close``), drop the rest of the body, close after it."""
        if self._finished or self.answered_early:
            return
        self.answered_early = True
        if self.body is not None:
            self.body.cleanup()
        data = json.dumps(error_body(message, None, self.dialect)).encode()
        self.clear()
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Content-Length", str(len(data)))
        self.set_header("Connection", "close")
        self.write(data)
        self.flush()
        # Read (and drop) what the client still sends, for LINGER seconds at most.
        self.request.connection.set_max_body_size(1 << 62)
        IOLoop.current().call_later(self.LINGER, self._end_early)

    def body_complete(self) -> bool:
        """Whether tornado has read the whole request body, so that the connection may be kept.

        Tornado closes a connection whose request was answered before its body was read
        (it could not tell where the next request starts), but decides so only once the
        headers are written, without ``Connection: close``: a keep-alive client then sends
        its next request on a closed connection. The body's future is tornado's own signal
        (its ``RequestHandler.on_connection_close`` reads it too); without it, say closing.
        """
        future = getattr(self.request, "_body_future", None)
        return future is not None and future.done()

    def flush(self, include_footers: bool = False) -> Future[None]:
        """Say ``Connection: close`` on any answer sent before the body is in: tornado closes."""
        if not self.body_complete():
            self.set_header("Connection", "close")
        return super().flush(include_footers)

    def _end_early(self) -> None:
        if not self._finished:
            connection = self.request.connection
            self.finish().add_done_callback(lambda _: connection.close())

    def data_received(self, chunk: bytes) -> None:
        if self.body is None or self.answered_early or self.body_error is not None:
            return
        try:
            self.body.feed(chunk)
        except FieldTooLarge as e:
            self._refuse_body(413, str(e))
        except BodyTooLarge as e:
            self.answer_early(413, str(e))
        except BadBody as e:
            self._refuse_body(400, str(e))
        except OSError as e:
            self._refuse_body(507, f"the server could not store the upload: {e.strerror or e}")

    def _refuse_body(self, status: int, message: str) -> None:
        self.body_error = (status, message)
        if self.body is not None:
            self.body.cleanup()  # what was spooled goes now; the rest is read and dropped

    def on_finish(self) -> None:
        if self.body is not None:
            self.body.cleanup()

    def on_connection_close(self) -> None:
        if self.body is not None:
            self.body.cleanup()

    def finished_body(self) -> bool:
        """Parse the end of the body; False if an answer (an error) was already sent."""
        if self.answered_early:
            self._end_early()
            return False
        if self._finished:
            return False
        if self.body_error is None and self.body is not None:
            try:
                self.body.finish()
            except BodyTooLarge as e:
                self._refuse_body(413, str(e))
            except BadBody as e:
                self._refuse_body(400, str(e))
        if self.body_error is not None:
            self.send_error_message(*self.body_error)
            return False
        return self.body is not None

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
