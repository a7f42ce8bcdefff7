"""``AsyncMoleClient``: the core's operations driven by ``httpx.AsyncClient`` and anyio."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import httpx

from ..protocol import ExecutionInfo, ExecutionState, ServiceInfo
from .base import ClientBase
from .core import Blocking, Call, Op, Reply, Sleep
from .ops import Entries, ErrorLog, Executions

__all__ = ["AsyncMoleClient"]

T = TypeVar("T")


class AsyncMoleClient(ClientBase):
    """The asynchronous twin of :class:`MoleClient`: the same arguments, the same methods,
    awaited. Use it as an async context manager, or await :meth:`aclose`. Works on
    asyncio and trio (through anyio, as httpx does)."""

    def __init__(self, url: str, password: str | None = None, **options: Any) -> None:
        super().__init__(url, password, **options)
        self._http = httpx.AsyncClient(**self._http_options)

    @classmethod
    def sharing(cls, client: ClientBase) -> AsyncMoleClient:
        """An asynchronous client of ``client``'s server, sharing its session and settings.

        Why: a kernel holds a blocking :class:`MoleClient`, and a view that polls with it
        from the kernel's event loop freezes the kernel while a server is slow to answer.
        Its twin awaits instead, with the same TLS trust and timeouts, and shares what the
        first found out: the server's kind and the token (no second login, and one error
        cursor on servers that keep one per token). :meth:`aclose` closes only the twin.
        """
        twin = cls.__new__(cls)
        twin.url = client.url
        twin._ops = client._ops
        twin._suspect_plain_http = client._suspect_plain_http
        twin._http_options = dict(client._http_options)
        twin._http = httpx.AsyncClient(**twin._http_options)
        return twin

    async def __aenter__(self) -> AsyncMoleClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the driver ---------------------------------------------------------------------
    async def _send(self, call: Call) -> Reply:
        try:
            return await self._exchange(call)
        except httpx.TransportError as e:
            await anyio.to_thread.run_sync(self._raise_or_retry, e)
        return await self._send(call)  # the first try was too quick for a slow TLS handshake

    async def _exchange(self, call: Call) -> Reply:
        response = await self._http.send(self._request_of(self._http, call), stream=True)
        self._answered()
        try:
            if call.sink is not None and response.is_success:
                async for chunk in response.aiter_bytes():
                    call.sink.write(chunk)
                return self._reply(response, b"")
            return self._reply(response, await response.aread())
        finally:
            await response.aclose()

    async def _perform(self, instruction: Any) -> Any:
        if isinstance(instruction, Call):
            return await self._send(instruction)
        if isinstance(instruction, Sleep):
            await anyio.sleep(instruction.seconds)
            return None
        if isinstance(instruction, Blocking):
            return await anyio.to_thread.run_sync(instruction.fn)
        raise TypeError(f"unknown instruction {instruction!r}")

    async def _run(self, op: Op[T]) -> T:
        try:
            instruction = next(op)
            while True:
                try:
                    result = await self._perform(instruction)
                except BaseException as e:
                    instruction = op.throw(e)
                else:
                    instruction = op.send(result)
        except StopIteration as stop:
            value: T = stop.value
            return value
        finally:
            op.close()

    # -- the API (documented in the package docstring) ----------------------------------
    async def detect(self) -> str:
        """Find out (once) what the server is; the :attr:`kind`."""
        return await self._run(self._ops.detect())

    async def service_info(self) -> ServiceInfo:
        """What the server says of itself (synthesised for OpenMOLE)."""
        return await self._run(self._ops.service_info())

    async def start(
        self,
        source: str | os.PathLike[str],
        script: str,
        tags: dict[str, str] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> str:
        """Upload ``source`` (a folder, packed, or a tar.gz) and start ``script``; the new id."""
        return await self._run(self._ops.start(source, script, tags, progress))

    async def state(self, execution_id: str) -> ExecutionState:
        return await self._run(self._ops.state(execution_id))

    async def info(self, execution_id: str) -> ExecutionInfo:
        return await self._run(self._ops.info(execution_id))

    async def output(self, execution_id: str, offset: int = 0) -> tuple[str, int]:
        """The output from byte ``offset``, and the offset to ask from next time."""
        return await self._run(self._ops.output(execution_id, offset))

    async def download(
        self,
        execution_id: str,
        path: str = "",
        dest: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Fetch a file or folder of the work directory to ``dest``; the path written."""
        return await self._run(self._ops.download(execution_id, path, dest, overwrite))

    async def list(
        self, details: bool = False, offset: int = 0, limit: int | None = None
    ) -> Executions:
        return await self._run(self._ops.list(details, offset, limit))

    async def errors(self, execution_id: str) -> ErrorLog:
        return await self._run(self._ops.errors(execution_id))

    async def listing(self, execution_id: str, path: str = "", last: int | None = None) -> Entries:
        return await self._run(self._ops.listing(execution_id, path, last))

    async def cancel(self, execution_id: str) -> ExecutionInfo:
        return await self._run(self._ops.cancel(execution_id))

    async def remove(self, execution_id: str) -> None:
        return await self._run(self._ops.remove(execution_id))

    async def wait(
        self,
        execution_id: str,
        poll: float = 0.5,
        timeout: float | None = None,
        on_state: Callable[[ExecutionState], None] | None = None,
    ) -> ExecutionState:
        """Poll until the execution ends; its last state. :class:`WaitTimeout` after ``timeout``."""
        return await self._run(self._ops.wait(execution_id, poll, timeout, on_state))
