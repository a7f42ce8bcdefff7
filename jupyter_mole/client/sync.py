"""``MoleClient``: the core's operations driven by ``httpx.Client`` (blocking)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from ..protocol import ExecutionInfo, ExecutionState, ServiceInfo
from .base import ClientBase
from .core import Blocking, Call, Op, Reply, Sleep
from .ops import Entries, ErrorLog, Executions

__all__ = ["MoleClient"]

T = TypeVar("T")


class MoleClient(ClientBase):
    """A blocking client of an OpenMOLE REST server: ours, or OpenMOLE of either generation.

    ``MoleClient(url, password=None, *, password_file=None, verify=True,
    fingerprint=None, timeout=..., api="auto")``. ``verify`` is True, a CA file,
    an ``ssl.SSLContext`` or False; ``fingerprint`` pins a self-signed server's
    certificate (``AB:CD:...``, as ``jupyter-mole serve`` prints it) instead.
    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, url: str, password: str | None = None, **options: Any) -> None:
        super().__init__(url, password, **options)
        self._http = httpx.Client(**self._http_options)

    def __enter__(self) -> MoleClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- the driver ---------------------------------------------------------------------
    def _send(self, call: Call) -> Reply:
        try:
            return self._exchange(call)
        except httpx.TransportError as e:
            self._raise_or_retry(e)
        return self._send(call)  # the first try was too quick for a slow TLS handshake

    def _exchange(self, call: Call) -> Reply:
        response = self._http.send(self._request_of(self._http, call), stream=True)
        self._answered()
        try:
            if call.sink is not None and response.is_success:
                for chunk in response.iter_bytes():
                    call.sink.write(chunk)
                return self._reply(response, b"")
            return self._reply(response, response.read())
        finally:
            response.close()

    def _perform(self, instruction: Any) -> Any:
        if isinstance(instruction, Call):
            return self._send(instruction)
        if isinstance(instruction, Sleep):
            time.sleep(instruction.seconds)
            return None
        if isinstance(instruction, Blocking):
            return instruction.fn()
        raise TypeError(f"unknown instruction {instruction!r}")

    def _run(self, op: Op[T]) -> T:
        try:
            instruction = next(op)
            while True:
                try:
                    result = self._perform(instruction)
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
    def detect(self) -> str:
        """Find out (once) what the server is; the :attr:`kind`."""
        return self._run(self._ops.detect())

    def service_info(self) -> ServiceInfo:
        """What the server says of itself (synthesised for OpenMOLE)."""
        return self._run(self._ops.service_info())

    def start(
        self,
        source: str | os.PathLike[str],
        script: str,
        tags: dict[str, str] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> str:
        """Upload ``source`` (a folder, packed, or a tar.gz) and start ``script``; the new id."""
        return self._run(self._ops.start(source, script, tags, progress))

    def state(self, execution_id: str) -> ExecutionState:
        return self._run(self._ops.state(execution_id))

    def info(self, execution_id: str) -> ExecutionInfo:
        return self._run(self._ops.info(execution_id))

    def output(self, execution_id: str, offset: int = 0) -> tuple[str, int]:
        """The output from byte ``offset``, and the offset to ask from next time."""
        return self._run(self._ops.output(execution_id, offset))

    def download(
        self,
        execution_id: str,
        path: str = "",
        dest: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Fetch a file or folder of the work directory to ``dest``; the path written."""
        return self._run(self._ops.download(execution_id, path, dest, overwrite))

    def list(self, details: bool = False, offset: int = 0, limit: int | None = None) -> Executions:
        return self._run(self._ops.list(details, offset, limit))

    def errors(self, execution_id: str) -> ErrorLog:
        return self._run(self._ops.errors(execution_id))

    def listing(self, execution_id: str, path: str = "", last: int | None = None) -> Entries:
        return self._run(self._ops.listing(execution_id, path, last))

    def cancel(self, execution_id: str) -> ExecutionInfo:
        return self._run(self._ops.cancel(execution_id))

    def remove(self, execution_id: str) -> None:
        return self._run(self._ops.remove(execution_id))

    def wait(
        self,
        execution_id: str,
        poll: float = 0.5,
        timeout: float | None = None,
        on_state: Callable[[ExecutionState], None] | None = None,
    ) -> ExecutionState:
        """Poll until the execution ends; its last state. :class:`WaitTimeout` after ``timeout``."""
        return self._run(self._ops.wait(execution_id, poll, timeout, on_state))
