"""The server assembled: engine, executions, auth, routes, TLS; started and stopped as one.

``MoleServer`` is what ``jupyter-mole serve`` runs and what tests start on a
loopback port. It serves both of OpenMOLE's API generations on one port.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import ssl
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web

from .. import __version__, archive
from ..engine import Engine
from . import job_api, token_api
from .auth import LoginLimiter, PasswordCheck, TokenStore
from .base import BaseHandler, ServerState
from .manager import ExecutionManager, Limits

__all__ = ["FEATURES", "MoleServer", "ServerOptions", "make_app"]

logger = logging.getLogger("jupyter_mole.server")

FEATURES = [
    "cancel",
    "execution-details",
    "output-offset",
    "error-log",
    "propfind",
    "tags",
    "per-token-error-cursor",
    "persistent-executions",
]


class NotFoundHandler(BaseHandler):
    def prepare(self) -> None:
        self.send_error_message(
            404, f"there is no route {self.request.method} {self.request.path} on this server; "
            f"see /openapi.json for the API"
        )  # fmt: skip


def make_app(state: ServerState) -> tornado.web.Application:
    return tornado.web.Application(
        token_api.ROUTES + job_api.ROUTES,
        mole=state,
        default_handler_class=NotFoundHandler,
        compress_response=False,
    )


@dataclasses.dataclass
class ServerOptions:
    state_directory: Path
    host: str = "127.0.0.1"
    port: int = 8443
    password: str | None = None  # None: no password (loopback only; checked by the caller)
    ssl_context: ssl.SSLContext | None = None
    max_upload: int = archive.DEFAULT_MAX_UPLOAD
    max_unpacked: int = archive.DEFAULT_MAX_UNPACK
    max_files: int = archive.DEFAULT_MAX_FILES
    token_duration_ms: int = 86_400_000
    login_block_seconds: float = 60.0  # first block after repeated wrong passwords
    workers: int | None = None


class MoleServer:
    """An engine and the HTTP(S) server in front of it, on the current IOLoop."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        options.state_directory.mkdir(parents=True, exist_ok=True)
        self.engine = Engine(options.state_directory, n_workers=options.workers)
        limits = Limits(options.max_upload, options.max_unpacked, options.max_files)
        self.manager = ExecutionManager(options.state_directory, self.engine, limits)
        self.state = ServerState(
            manager=self.manager,
            tokens=TokenStore(duration_ms=options.token_duration_ms),
            password=PasswordCheck(options.password) if options.password is not None else None,
            limiter=LoginLimiter(base_block=options.login_block_seconds),
            spool=options.state_directory / "uploads",
            max_upload=options.max_upload,
            service_info=self.service_info(),
        )
        self.app = make_app(self.state)
        self.http: tornado.httpserver.HTTPServer | None = None
        self.port: int | None = None

    def service_info(self) -> dict[str, Any]:
        return {
            "name": "jupyter-mole",
            "version": __version__,
            "generations": ["token", "job"],
            "engine": "embedded",
            "auth": "token" if self.options.password is not None else "none",
            "features": FEATURES,
        }

    def start(self) -> int:
        """Listen (port 0 picks a free one); the port listened on."""
        self.http = tornado.httpserver.HTTPServer(
            self.app, ssl_options=self.options.ssl_context, max_body_size=16 * 1024 * 1024,
            idle_connection_timeout=3600,
        )  # fmt: skip
        sockets = tornado.netutil.bind_sockets(
            self.options.port, self.options.host, family=socket.AF_UNSPEC
        )
        self.http.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        return self.port

    @property
    def url(self) -> str:
        scheme = "https" if self.options.ssl_context else "http"
        host = self.options.host
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop listening; running executions are recorded as interrupted, not cancelled."""
        if self.http is not None:
            self.http.stop()
            await self.http.close_all_connections()
        self.manager.shutting_down = True
        self.engine.close()
        self.manager.close()
