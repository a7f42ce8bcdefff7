"""The backend behind the extension: the embedded server (started, watched) or a configured one.

One client per Jupyter server, and one poller per execution: the state of an
execution is asked of the backend at most once per poll interval, however
many tabs and widgets ask us, and its environment errors accumulate here so
that every view sees all of them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from .. import connection
from ..client import AsyncMoleClient
from ..protocol import ErrorInfo, ExecutionState
from .config import Mole

__all__ = ["Backend", "ExecutionPoller"]


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
                {"message": e.message, "level": e.level, "stack-trace": e.stack_trace, "count": 0},
            )
            known["count"] += 1


class Backend:
    """Where executions run, as the extension sees it."""

    def __init__(self, config: Mole, log: logging.Logger) -> None:
        self.config = config
        self.log = log
        self.connection: connection.Connection | None = None
        self.client: AsyncMoleClient | None = None
        self.kind: str | None = None
        self.problem: str | None = None
        self.pollers: dict[str, ExecutionPoller] = {}
        self.queries = 0  # backend state queries made (what the poll interval bounds)
        self._list_cache: tuple[float, list[Any]] | None = None
        self._lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------
    def _configured(self) -> connection.Connection:
        password = self.config.password
        if self.config.password_file:
            password = (
                Path(self.config.password_file).expanduser().read_text().splitlines()[0].strip()
            )
        return connection.Connection(
            self.config.url,
            password,
            self.config.fingerprint,
            self.config.ca_file,
            source="configuration",
        )

    def _verify(self, found: connection.Connection) -> Any:
        if found.ca_file:
            return found.ca_file
        if not self.config.verify_tls and found.kind != "embedded":
            self.log.warning(
                "jupyter-mole: TLS verification of %s is off (Mole.verify_tls = False): anyone "
                "on the path could read the password; pin its certificate with Mole.fingerprint",
                found.url,
            )
            return False
        return True

    async def connect(self) -> None:
        """Find or start the backend; an unreachable remote backend is reported, not fatal."""
        async with self._lock:
            if self.config.url:
                found = self._configured()
            else:
                state = (
                    Path(self.config.state_directory).expanduser()
                    if self.config.state_directory
                    else None
                )
                found = await asyncio.to_thread(
                    connection.start_embedded, state, None, 60, self.config.embedded_workers or None
                )
            if self.client is not None:
                await self.client.aclose()
            self.connection = found
            self.client = AsyncMoleClient(
                found.url,
                found.password,
                verify=self._verify(found),
                fingerprint=found.fingerprint,
                api=self.config.api if self.config.url else "auto",
            )
            if found.kind != "embedded":
                connection.write_connection_file(found)
            try:
                self.kind = await self.client.detect()
                info = await self.client.service_info()
                self.problem = None
                self.log.info(
                    "jupyter-mole: backend %s at %s (%s, API %s)",
                    self.kind, found.url, info.version, ", ".join(info.generations),
                )  # fmt: skip
            except Exception as e:
                self.problem = f"the backend at {found.url} does not answer: {e}"
                self.log.warning("jupyter-mole: %s", self.problem)

    async def ensure(self) -> AsyncMoleClient:
        """The client, restarting the embedded server if it has died."""
        if self.client is None:
            await self.connect()
        elif self.connection is not None and self.connection.kind == "embedded":
            alive = await asyncio.to_thread(connection.is_alive, self.connection, 2.0)
            if not alive:
                self.log.warning("jupyter-mole: the embedded server died; starting it again")
                await self.connect()
        assert self.client is not None
        return self.client

    async def close(self) -> None:
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
            if poller.state is None or not (fresh or (poller.state.done and poller.fetched)):
                client = await self.ensure()
                self.queries += 1
                state = await client.state(execution_id)
                for env in state.environments:
                    poller.add_errors(env.errors)
                poller.state, poller.fetched = state, time.monotonic()
        assert poller.state is not None
        return poller.state, poller

    async def executions(self) -> list[Any]:
        """The detailed list, asked of the backend at most once per poll interval."""
        cached = self._list_cache
        if cached is not None and time.monotonic() - cached[0] < self.config.poll_interval:
            return cached[1]
        client = await self.ensure()
        if self.kind == "jupyter-mole":
            infos = list(await client.list(details=True))
        else:  # OpenMOLE lists ids only: details come from each state (cached per execution)
            infos = [{"id": i} for i in await client.list()]
        self._list_cache = (time.monotonic(), infos)
        return infos

    def forget(self, execution_id: str) -> None:
        self.pollers.pop(execution_id, None)
        self._list_cache = None
