"""Helpers and fixtures shared by the ``test_labserver*`` modules (the Jupyter server extension).

The fixtures are not a plugin: each module imports them by name along with
pytest-jupyter's (see ``test_labserver.py``'s docstring). ``test_labserver.py``
re-exports them for the modules that import them from there. A module that
imports ``shared_embedded`` gets an embedded server of its own, shared by its
tests (the extension reuses it through ``reuse_embedded``).
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
from jupyter_server.auth.authorizer import Authorizer
from tornado.httpclient import HTTPResponse
from traitlets import List, Unicode

from jupyter_mole import connection
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


async def logged(log: Records, text: str, level: int = logging.INFO, timeout: float = 90) -> str:
    """The first message of Jupyter's log holding ``text`` (at ``level`` or above), waited for.

    What the extension does at load on its own (looking for its backend) runs on Jupyter's
    event loop, which runs while the test awaits; nothing here asks the extension anything.
    ``log`` is the ``server_log`` fixture, not pytest's ``caplog``: an engine test earlier in
    the run leaves a Dask cluster whose start set pytest's own handlers to ERROR (Dask quiets
    the handlers of its non-propagating loggers, and pytest adds its handlers to those).
    (What is logged while the app initializes goes to stderr, not here: Jupyter stops its log
    from propagating until pytest-jupyter turns it back on; read it with ``capsys``.)
    """
    deadline = time.monotonic() + timeout
    while True:
        for message in log.messages(level):
            if text in message:
                return message
        assert time.monotonic() < deadline, f"never logged {text!r}:\n" + "\n".join(log.messages())
        await asyncio.sleep(0.05)


class DenyingAuthorizer(Authorizer):
    """Jupyter's authorization as a deployment may narrow it (JupyterHub's scopes, say):
    refuses the ``action:resource`` pairs listed in ``denied``, allows the rest."""

    denied = List(Unicode(), config=True, help="action:resource pairs to refuse (write:contents)")

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return f"{action}:{resource}" not in self.denied


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
    """Kill every embedded server a test started (its state is under the test's tmp_path).

    First, the extension connects no more: a test that failed before Jupyter's event loop ran
    leaves the look for the backend (scheduled at load) pending, and pytest-jupyter runs that
    loop once more at the very end, to stop Jupyter, after this fixture.
    """
    yield
    from jupyter_server.serverapp import ServerApp

    if ServerApp.initialized() and getattr(ServerApp.instance(), "web_app", None) is not None:
        backend = ServerApp.instance().web_app.settings.get("mole_backend")
        if backend is not None:
            backend.closed = True
    for process in servers_under(tmp_path):
        stop_group(process.pid)
    assert not servers_under(tmp_path)


@pytest.fixture(name="shared_embedded", scope="module")
def shared_embedded_fixture(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[connection.Connection]:
    """An embedded server started as a kernel would start it, for the extension to reuse."""
    base = tmp_path_factory.mktemp("shared-embedded")
    found = connection.start_embedded(base / "state", base / "connection.json", 60, 1)
    yield found
    assert found.pid is not None
    stop_group(found.pid)


@pytest.fixture(name="reuse_embedded")
def reuse_embedded_fixture(
    shared_embedded: connection.Connection, jp_runtime_dir: Path
) -> connection.Connection:
    """The shared server's connection file, in this test's Jupyter runtime directory."""
    connection.write_connection_file(shared_embedded, jp_runtime_dir / connection.FILE_NAME)
    return shared_embedded


@pytest.fixture(name="mole_config")
def mole_config_fixture(request: pytest.FixtureRequest) -> dict[str, Any]:
    """``c.Mole`` for the test: one embedded worker, unless parametrized (``indirect=True``)
    with a dict, or a function of the request (to reach other fixtures) returning one."""
    param = getattr(request, "param", None)
    if param is None:
        return {"embedded_workers": 1}
    return param(request) if callable(param) else dict(param)


@pytest.fixture(name="server_log")
def server_log_fixture() -> Iterator[Records]:
    """Everything logged to the root logger during the test, Jupyter's log included (once
    pytest-jupyter lets it propagate), whatever the levels of pytest's own handlers."""
    with Records(logging.getLogger()) as records:
        yield records


@pytest.fixture(name="jp_server_config")
def jp_server_config_fixture(
    mole_config: dict[str, Any], no_stray_servers: None, server_log: Records
) -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"jupyter_mole": True}}, "Mole": mole_config}


@pytest.fixture(name="api")
def api_fixture(jp_fetch: Any) -> Api:
    return Api(jp_fetch)
