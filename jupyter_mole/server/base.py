"""What every handler shares: authentication, JSON and error answers, blocking work off the loop.

Handlers are thin: they read parameters, call the :class:`ExecutionManager` and
write what it returns in their generation's dialect. An error the user caused
is always a JSON ``{"message": ...}`` with the right status, never a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import tornado.web
from tornado.ioloop import IOLoop

from ..protocol import Dialect, error_body
from .auth import bearer_or_query
from .manager import ExecutionManager, FileMissing, NotFound, Refused, ServiceError

__all__ = ["BaseHandler", "ServerState", "http_error_message", "stream_chunks"]

logger = logging.getLogger("jupyter_mole.server")
T = TypeVar("T")


class ServerState:
    """What the handlers of one server share (passed through the application's settings)."""

    def __init__(
        self,
        manager: ExecutionManager,
        tokens: Any,
        password: Any | None,
        limiter: Any,
        spool: Path,
        max_upload: int,
        service_info: dict[str, Any],
    ) -> None:
        self.manager = manager
        self.tokens = tokens
        self.password = password  # None: no password, every request is allowed
        self.limiter = limiter
        self.spool = spool
        self.max_upload = max_upload
        self.service_info = service_info


class BaseHandler(tornado.web.RequestHandler):
    """JSON answers in a dialect; errors as ``{"message"}``; token checks."""

    dialect = Dialect.CAMEL
    not_found_status = 417  # the token API answers 417 for an unknown execution
    file_not_found_status = 404  # ... and 404 for a file its work directory does not hold

    @property
    def server(self) -> ServerState:
        return self.settings["mole"]

    @property
    def manager(self) -> ExecutionManager:
        return self.server.manager

    def check_xsrf_cookie(self) -> None:
        """A token-authenticated API: no cookies, so no cross-site request forgery to guard."""

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def compute_etag(self) -> None:
        """No ETag: every answer is ``no-store``, so no client would ever revalidate one.

        Tornado would otherwise hash the body of every GET answer to make it: a few percent
        of the cost of a polled ``/state``.
        """
        return None

    def check_etag_header(self) -> bool:
        """Nothing to match without an ETag: spare tornado parsing ``If-None-Match``."""
        return False

    # -- answers ----------------------------------------------------------------------
    def send_json(self, obj: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(obj))

    def send_error_message(
        self,
        status: int,
        message: str,
        stack_trace: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if self._finished:
            return
        self.clear()
        for name, value in (headers or {}).items():
            self.set_header(name, value)
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(error_body(message, stack_trace, self.dialect)))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Whatever went wrong, the client gets a JSON message, never a Python traceback."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, tornado.web.HTTPError) and exc.log_message:
            message = http_error_message(exc)
        elif status_code >= 500:
            message = "the server failed to answer this request; its log says why"
        else:
            message = self._reason
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(error_body(message, None, self.dialect)))

    def fail(self, error: ServiceError) -> None:
        if isinstance(error, FileMissing):
            status = self.file_not_found_status
        elif isinstance(error, NotFound):
            status = self.not_found_status
        elif isinstance(error, Refused):
            status = 417
        else:
            status = 400
        self.send_error_message(status, error.message, error.stack_trace)

    # -- parameters --------------------------------------------------------------------
    def param(self, name: str, default: str | None = None) -> str | None:
        """A parameter from the query string or the form body (what OpenMOLE's token API takes)."""
        return self.get_argument(name, default)

    def int_param(self, name: str, default: int | None = None) -> int | None:
        raw = self.param(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ServiceError(f"{name} must be a whole number, got {raw!r}") from None
        if value < 0:
            raise ServiceError(f"{name} must be 0 or more, got {value}")
        return value

    # -- authentication -----------------------------------------------------------------
    def token(self, form_token: str | None = None) -> str | None:
        query = self.get_query_argument("token", None)
        if form_token is None and self.request.method not in ("GET", "PROPFIND", "DELETE"):
            form_token = self.get_body_argument("token", None) if self._has_form() else None
        return bearer_or_query(self.request.headers.get("Authorization"), query, form_token)

    def _has_form(self) -> bool:
        kind = self.request.headers.get("Content-Type", "")
        return kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))

    def authenticated(self, form_token: str | None = None) -> bool:
        """True, or a 401 answer has been sent."""
        if self.server.password is None:
            return True
        if self.server.tokens.check(self.token(form_token)):
            return True
        self.send_error_message(401, "This service requires a valid token")
        return False

    def reader(self) -> str:
        """Whose "errors since the last query" cursor this request moves: its token's own."""
        return (self.token() or "") + "|" + (self.get_query_argument("reader", "") or "")

    # -- blocking work -----------------------------------------------------------------
    async def blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` in a thread: unpacking, loading a script or waiting for a cancel."""
        return await IOLoop.current().run_in_executor(None, functools.partial(fn, *args, **kwargs))

    async def send_chunks(self, chunks: Iterator[bytes]) -> None:
        """Stream a body without holding it whole; the generator runs in a thread."""
        iterator = iter(chunks)
        while True:
            chunk = await self.blocking(next, iterator, None)
            if chunk is None:
                break
            self.write(chunk)
            await self.flush()
        self.finish()


def http_error_message(error: tornado.web.HTTPError) -> str:
    """The message tornado meant for its log: for a client's mistake, it is the one to show."""
    if not error.log_message:
        return error.reason or "bad request"
    return error.log_message % error.args if error.args else error.log_message


def stream_chunks(path: Path, size: int = 256 * 1024) -> Iterator[bytes]:
    """A file's bytes in chunks."""
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk
