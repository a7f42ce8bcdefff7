"""The backend behind the extension: the embedded server (started, watched) or a configured one.

One client per Jupyter server, and one poller per execution: the state of an
execution is asked of the backend at most once per poll interval, however
many tabs and widgets ask us, and its environment errors accumulate here so
that every view sees all of them. The list is cached the same way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from traitlets import TraitError

from .. import connection
from ..client import MOLE, AsyncMoleClient, ConnectionFailed, MoleClientError, NotFound
from ..protocol import ErrorInfo, ExecutionState
from .config import Mole, read_password_file

__all__ = ["Backend", "BackendUnavailable", "ExecutionPoller"]

T = TypeVar("T")


class BackendUnavailable(Exception):
    """There is no backend to ask: the embedded server cannot start, or the configuration is unusable."""


@dataclasses.dataclass
class ExecutionPoller:
    """The cached state of one execution and every environment error seen for it."""

    state: ExecutionState | None = None
    fetched: float = 0.0
    errors: dict[tuple[str, str], dict[str, Any]] = dataclasses.field(default_factory=dict)
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)

    def add_errors(self, errors: list[ErrorInfo]) -> None:
        for e in errors:
            key = (str(e.level), e.message)
            known = self.errors.setdefault(
                key,
                {"message": e.message, "level": e.level, "stackTrace": e.stack_trace, "count": 0},
            )
            known["count"] += 1


class Backend:
    """Where executions run, as the extension sees it."""

    retry_after = 5.0
    """Seconds during which a failure to find or start the backend is the answer to every
    request, rather than a new attempt: starting the embedded server may take up to a minute
    to fail, and the requests would queue behind each attempt."""

    def __init__(self, config: Mole, log: logging.Logger) -> None:
        self.config = config
        self.log = log
        self.connection: connection.Connection | None = None
        self.client: AsyncMoleClient | None = None
        self.problem: str | None = None
        self.pollers: dict[str, ExecutionPoller] = {}
        self.queries = 0  # backend state queries made (what the poll interval bounds)
        self.list_queries = 0  # backend list queries made (bounded the same way)
        self._list_cache: tuple[float, list[Any]] | None = None
        self._list_lock = asyncio.Lock()
        self._lock = asyncio.Lock()
        self._failed: float | None = None  # when the last attempt to connect failed
        self.closed = False  # Jupyter is shutting down: no new connection
        # Where the connection file and the embedded server's executions go, fixed at start:
        # Jupyter's directories as this Jupyter was started with, whenever the server (re)starts.
        self.connection_path = connection.connection_file()
        configured = config.state_directory
        state = (
            Path(configured).expanduser() if configured else connection.default_state_directory()
        )
        self.state_directory = state.resolve()

    @property
    def kind(self) -> str | None:
        """What the backend is (``jupyter-mole``, ``openmole-job``, ``openmole-token``), once known."""
        return self.client.kind if self.client is not None else None

    @property
    def embedded(self) -> bool:
        return self.connection is not None and self.connection.kind == "embedded"

    # -- lifecycle ---------------------------------------------------------------------
    def _configured(self) -> connection.Connection:
        password = self.config.password
        if self.config.password_file:
            try:  # checked at start; read again, as it may have changed since
                password = read_password_file(self.config.password_file)
            except TraitError as e:
                raise BackendUnavailable(str(e)) from None
        assert self.config.url is not None
        # All of it goes into the connection file: the kernels must reach the backend as we do.
        return connection.Connection(
            self.config.url,
            password,
            self.config.fingerprint,
            self.config.ca_file,
            source="configuration",
            verify_tls=self.config.verify_tls,
            api=self.config.api,
        )

    def _warn_if_unverified(self, found: connection.Connection) -> None:
        """Say so at every start: with nothing checked, anyone on the path gets the password."""
        if found.verify_tls or found.fingerprint or found.ca_file:
            return
        if found.url.startswith("https"):
            self.log.warning(
                "jupyter-mole: TLS verification of %s is off (Mole.verify_tls = False): "
                "anyone on the path could read the password; pin its certificate with "
                "Mole.fingerprint",
                found.url,
            )

    async def connect(self, force: bool = False) -> None:
        """Find or start the backend (once; again with ``force``).

        An unreachable remote backend, or an embedded server that cannot start,
        is reported (``problem``, and the log), not fatal.
        """
        async with self._lock:
            if self.client is not None and not force:
                return
            await self._connect()

    async def _connect(self) -> None:
        if self.closed:
            return
        if self._failed is not None and time.monotonic() - self._failed < self.retry_after:
            return  # the problem stands (every request answers it) until the delay is over
        try:
            if self.config.url:
                found = self._configured()
            else:
                found = await asyncio.to_thread(
                    connection.start_embedded,
                    self.state_directory,
                    self.connection_path,
                    60,
                    self.config.embedded_workers or None,
                )
        except (BackendUnavailable, connection.NoServerError, OSError) as e:
            self._failed = time.monotonic()
            self.problem = str(e)
            self.log.error("jupyter-mole: %s", self.problem)
            if not self.config.url and self.client is not None:
                old, self.client = self.client, None  # its server is dead: say so, not 502
                await old.aclose()
            return
        self._failed = None
        if self.closed:  # Jupyter stopped while the server started; it stays for the kernels
            return
        old, self.connection = self.client, found
        self._warn_if_unverified(found)
        self.client = AsyncMoleClient(found.url, **found.client_options())
        for poller in self.pollers.values():  # ask the new server; keep the errors seen
            poller.state, poller.fetched = None, 0.0
        self._list_cache = None
        if old is not None:
            await old.aclose()
        if found.kind != "embedded":
            connection.write_connection_file(found, self.connection_path)
        else:
            self._say_if_elsewhere(found)
        await self._check()

    def _say_if_elsewhere(self, found: connection.Connection) -> None:
        """An embedded server already running is reused as it is: say so if its executions are
        not where Mole.state_directory says (a kernel, or another Jupyter, started it)."""
        recorded = found.state_directory
        wanted = self.state_directory
        if found.source == "started" or recorded is None or Path(recorded) == wanted:
            return
        setting = "Mole.state_directory" if self.config.state_directory else "the default"
        self.log.warning(
            "jupyter-mole: reusing the embedded server already running (pid %s), whose "
            "executions are in %s, not in %s (%s); stop it for the setting to apply",
            found.pid, recorded, wanted, setting,
        )  # fmt: skip

    async def _check(self) -> None:
        """Ask the backend what it is; log it, or record why it does not answer."""
        assert self.client is not None and self.connection is not None
        try:
            kind = await self.client.detect()
            info = await self.client.service_info()
        except MoleClientError as e:
            self.problem = f"the backend at {self.connection.url} does not answer: {e}"
            self.log.warning("jupyter-mole: %s", self.problem)
            return
        self.problem = None
        found = self.connection
        how = ""
        if self.embedded:
            done = "started" if found.source == "started" else "already running, reused"
            how = f"; the embedded server, pid {found.pid}, {done}"
        self.log.info(
            "jupyter-mole: backend %s at %s (%s, API %s%s)",
            kind, found.url, info.version or "version unknown", ", ".join(info.generations), how,
        )  # fmt: skip

    async def recheck(self) -> None:
        """After a problem: try again (the remote backend may be up now)."""
        async with self._lock:
            if self.client is None:
                await self._connect()
            elif self.problem is not None:
                await self._check()

    async def ensure(self) -> AsyncMoleClient:
        """The client, (re)starting the embedded server if it is not running."""
        if self.client is None:
            await self.connect()
        elif self.embedded and not _process_alive(self.connection):
            await self.restart(self.client)
        if self.client is None:
            raise BackendUnavailable(self.problem or "no backend")
        return self.client

    async def restart(self, failed: AsyncMoleClient) -> None:
        """Start the embedded server again, unless another call already did."""
        async with self._lock:
            if self.client is not failed:
                return
            self.log.warning("jupyter-mole: the embedded server has died; starting it again")
            await self._connect()

    async def call(self, op: Callable[[AsyncMoleClient], Awaitable[T]]) -> T:
        """``op(client)``; if the embedded server no longer answers, it is restarted and asked again."""
        client = await self.ensure()
        try:
            return await op(client)
        except ConnectionFailed as e:
            if not self.embedded or e.reason != "unreachable":
                raise
        await self.restart(client)
        return await op(await self.ensure())

    async def close(self) -> None:
        """At Jupyter's shutdown: close the client, and connect no more.

        The embedded server is not stopped: the kernels use it too (the connection file names
        it), and its executions go on without Jupyter; the next Jupyter reuses it.
        """
        self.closed = True
        if self.client is not None:
            await self.client.aclose()

    # -- cached reads ------------------------------------------------------------------
    def poller(self, execution_id: str) -> ExecutionPoller:
        return self.pollers.setdefault(execution_id, ExecutionPoller())

    async def state(self, execution_id: str) -> tuple[ExecutionState, ExecutionPoller]:
        """The state, asked of the backend at most once per poll interval; errors accumulated."""
        poller = self.poller(execution_id)
        async with poller.lock:
            fresh = time.monotonic() - poller.fetched < self.config.poll_interval
            if poller.state is None or not (fresh or poller.state.done):
                self.queries += 1
                try:
                    state = await self.call(lambda c: c.state(execution_id))
                except NotFound:
                    if self.pollers.get(execution_id) is poller:
                        del self.pollers[execution_id]
                    raise
                for env in state.environments:
                    poller.add_errors(env.errors)
                poller.state, poller.fetched = state, time.monotonic()
        assert poller.state is not None
        return poller.state, poller

    async def executions(self) -> list[Any]:
        """The detailed list, asked of the backend at most once per poll interval."""
        async with self._list_lock:
            cached = self._list_cache
            if cached is not None and time.monotonic() - cached[0] < self.config.poll_interval:
                return cached[1]
            self.list_queries += 1
            infos = await self.call(self._list)
            self._list_cache = (time.monotonic(), infos)
            self._drop_ended_pollers({i["id"] if isinstance(i, dict) else i.id for i in infos})
            return infos

    def _drop_ended_pollers(self, listed: set[str]) -> None:
        """Forget ended executions that the backend no longer lists (removed by another client).

        An ended execution's state is never asked again, so without this its
        cache would outlive it; a running one finds out at its next query.
        """
        for execution_id, poller in list(self.pollers.items()):
            if execution_id not in listed and poller.state is not None and poller.state.done:
                del self.pollers[execution_id]

    async def _list(self, client: AsyncMoleClient) -> list[Any]:
        kind = await client.detect()
        if kind == MOLE:
            return list(await client.list(details=True))
        # OpenMOLE lists ids only: say so, and add what we know (the cached states) for free
        lacking = (
            f"the backend ({kind}) does not offer execution details (script, times, counts, "
            "tags): OpenMOLE lists ids only"
        )
        infos: list[Any] = []
        for i in await client.list():
            item: dict[str, Any] = {"id": i, "unsupported": lacking}
            known = self.pollers.get(i)
            if known is not None and known.state is not None:
                item.update(
                    state=known.state.state,
                    ready=known.state.ready,
                    running=known.state.running,
                    completed=known.state.completed,
                )
            infos.append(item)
        return infos

    def forget(self, execution_id: str) -> None:
        self.pollers.pop(execution_id, None)
        self._list_cache = None


def _process_alive(found: connection.Connection | None) -> bool:
    """Whether the embedded server's process runs (a killed child is a zombie until reaped)."""
    if found is None or found.pid is None:
        return True
    import psutil

    try:
        return psutil.Process(found.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True
