"""Helpers and fixtures shared by the ``test_labserver*`` modules (the Jupyter server extension).

The fixtures are not a plugin: each module imports them by name along with
pytest-jupyter's (see ``test_labserver.py``'s docstring). ``test_labserver.py``
re-exports them for the modules that import them from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from tornado.httpclient import HTTPResponse

from jupyter_mole.labserver.backend import Backend
from tests.servers import PI_SCRIPT

# -- helpers shared by the test_labserver_* modules ------------------------------------------


def on_loop(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test on pytest-jupyter's event loop (the loop its server app runs on)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.get_event_loop().run_until_complete(test(*args, **kwargs))

    return run


class Api:
    """``jp_fetch`` under ``mole/api/``: JSON in and out, the status checked, every body kept."""

    def __init__(self, fetch: Callable[..., Awaitable[HTTPResponse]]) -> None:
        self.fetch = fetch
        self.seen: list[str] = []  # every body and header received, to look for secrets in

    async def __call__(
        self,
        *parts: str,
        method: str = "GET",
        body: Any = None,
        params: dict[str, str] | None = None,
        expect: int = 200,
    ) -> Any:
        kwargs: dict[str, Any] = {"method": method, "raise_error": False}
        if body is not None:
            kwargs["body"] = body if isinstance(body, str | bytes) else json.dumps(body)
        elif method == "POST":
            kwargs["body"] = b""
        response = await self.fetch("mole", "api", *parts, params=params, **kwargs)
        text = response.body.decode("utf-8", "replace") if response.body else ""
        self.seen.append(text)
        self.seen.append(str(dict(response.headers.get_all())))
        assert response.code == expect, f"{method} {'/'.join(parts)}: {response.code} {text}"
        return json.loads(text) if text else None

    async def start(self, path: str) -> str:
        return (await self("executions", method="POST", body={"path": path}, expect=201))["id"]

    async def wait(self, execution_id: str, timeout: float = 90) -> dict[str, Any]:
        """Poll the state until the execution ends; the last state."""
        deadline = time.monotonic() + timeout
        while True:
            state = await self("executions", execution_id, "state")
            if state["state"] != "running":
                return state
            assert time.monotonic() < deadline, f"still running after {timeout} s: {state}"
            await asyncio.sleep(0.3)

    def assert_never_seen(self, *secrets: str | None) -> None:
        for secret in secrets:
            if secret:
                assert not any(secret in text for text in self.seen), "a secret reached the browser"


class Records(logging.Handler):
    """What a logger says while attached (independent of pytest's log capture)."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logging.DEBUG)
        self.logger, self.records = logger, []  # type: ignore[var-annotated]

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.DEBUG) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]

    def __enter__(self) -> Records:
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)


def backend_of(serverapp: Any) -> Backend:
    return serverapp.web_app.settings["mole_backend"]


def write_project(root: Path, folder: str = "project", script: str = PI_SCRIPT) -> str:
    """A folder of Jupyter's file tree with a script (and a data file); the script's path."""
    (root / folder / "data").mkdir(parents=True, exist_ok=True)
    (root / folder / "model.oms").write_text(script)
    (root / folder / "data" / "input.txt").write_text("some input\n")
    return f"{folder}/model.oms"


def stop_group(pid: int, timeout: float = 20) -> None:
    """Stop a server started in its own session, and its Dask workers with it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it was our child


def servers_under(path: Path) -> list[psutil.Process]:
    """The ``jupyter_mole serve`` processes whose command line names something under ``path``."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if process.info["status"] == psutil.STATUS_ZOMBIE or "serve" not in cmdline:
            continue
        if any(str(path) in arg for arg in cmdline) and "jupyter_mole" in cmdline:
            found.append(process)
    return found


@pytest.fixture(name="no_stray_servers")
def no_stray_servers_fixture(tmp_path: Path) -> Iterator[None]:
    """Kill every embedded server a test started (its state is under the test's tmp_path)."""
    yield
    for process in servers_under(tmp_path):
        stop_group(process.pid)
    assert not servers_under(tmp_path)


@pytest.fixture(name="mole_config")
def mole_config_fixture(request: pytest.FixtureRequest) -> dict[str, Any]:
    """``c.Mole`` for the test: one embedded worker, unless parametrized (``indirect=True``)
    with a dict, or a function of the request (to reach other fixtures) returning one."""
    param = getattr(request, "param", None)
    if param is None:
        return {"embedded_workers": 1}
    return param(request) if callable(param) else dict(param)


@pytest.fixture(name="jp_server_config")
def jp_server_config_fixture(mole_config: dict[str, Any], no_stray_servers: None) -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"jupyter_mole": True}}, "Mole": mole_config}


@pytest.fixture(name="api")
def api_fixture(jp_fetch: Any) -> Api:
    return Api(jp_fetch)
