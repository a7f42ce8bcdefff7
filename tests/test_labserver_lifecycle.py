"""The extension's start and stop: settings it ignores, a backend that cannot start, shutdown.

- Settings that the configured kind of backend never reads are named in a
  warning at start (they are not an error: see ``Mole.check``).
- An embedded server that cannot start is reported, and not started again at
  every request: the failure is the answer for ``Backend.retry_after`` seconds.
- When Jupyter stops, the extension closes its client and leaves the embedded
  server running, for the kernels that use it too.

The embedded server that cannot start is a real one: its state directory
holds a corrupt index of executions, so its process exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import psutil
import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403  (see test_labserver's docstring)

from jupyter_mole import connection
from tests.labservers import (  # noqa: F401  (the fixtures are used by name)
    Api,
    Records,
    api_fixture,
    backend_of,
    jp_server_config_fixture,
    logged,
    mole_config_fixture,
    no_stray_servers_fixture,
    on_loop,
    reuse_embedded_fixture,
    server_log_fixture,
    servers_under,
    shared_embedded_fixture,
    write_project,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- settings that do nothing are named ----------------------------------------------------


@pytest.mark.parametrize(
    ("mole_config", "ignored"),
    [
        (
            {"password": "secret", "verify_tls": False, "api": "job", "embedded_workers": 1},
            "Mole.password, Mole.verify_tls, Mole.api ignored: for the server at Mole.url only",
        ),
        (
            lambda r: {
                "url": f"http://127.0.0.1:{free_port()}",
                "state_directory": str(r.getfixturevalue("tmp_path") / "state"),
                "embedded_workers": 2,
            },
            "Mole.state_directory, Mole.embedded_workers ignored: for the embedded server only",
        ),
    ],
    indirect=["mole_config"],
    ids=["backend-settings-without-url", "embedded-settings-with-url"],
)
@on_loop
async def test_settings_the_backend_never_reads_are_named_at_start(
    reuse_embedded: connection.Connection,
    jp_configurable_serverapp: Any,
    jp_server_config: dict[str, Any],
    ignored: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    server_log: Records,
) -> None:
    app = jp_configurable_serverapp(config=jp_server_config)
    said = capsys.readouterr().err  # the app logs to stderr while it loads its extensions
    warned = [line for line in said.splitlines() if "ignored:" in line]
    assert len(warned) == 1 and f"jupyter-mole: {ignored}" in warned[0], said
    assert "secret" not in warned[0]
    # ...and the extension goes on with what it reads
    backend = backend_of(app)
    if backend.config.url:
        await logged(
            server_log, f"the backend at {backend.config.url} does not answer", logging.WARNING
        )
    else:
        await logged(server_log, "jupyter-mole: backend ")
        assert backend.connection is not None and backend.connection.url == reuse_embedded.url
    assert not servers_under(tmp_path) and not (tmp_path / "state").exists()


# -- an embedded server that cannot start ----------------------------------------------------


def _corrupt_state(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A state directory whose index of executions is not a database: the server exits at once."""
    state = request.getfixturevalue("tmp_path") / "state"
    (state / "executions").mkdir(parents=True)
    (state / "executions" / "index.sqlite").write_bytes(b"not a database\0" * 300)
    return {"state_directory": str(state), "embedded_workers": 1}


def attempts(state: Path) -> int:
    """How many times the embedded server was started there (each one left its error)."""
    log = state / "server.log"
    return log.read_text().count("file is not a database") if log.exists() else 0


@pytest.mark.parametrize("mole_config", [_corrupt_state], indirect=True, ids=["corrupt-state"])
@on_loop
async def test_an_embedded_server_that_cannot_start_is_reported_not_retried_at_once(
    jp_serverapp: Any,
    api: Api,
    jp_fetch: Any,
    jp_root_dir: Path,
    tmp_path: Path,
    server_log: Records,
) -> None:
    state = tmp_path / "state"
    backend = backend_of(jp_serverapp)
    said = await logged(server_log, "the embedded server did not start", logging.ERROR)
    assert str(state / "server.log") in said and attempts(state) == 1

    # every request answers the problem, and none starts the server again (each attempt would
    # take up to a minute to fail, and the requests would queue behind it)
    service = await api("service")
    assert service["problem"] and "the embedded server did not start" in service["problem"]
    assert service["kind"] is None and service["embedded"] is False
    assert (
        "no backend: the embedded server did not start"
        in (await api("executions", expect=503))["message"]
    )
    script = write_project(jp_root_dir)
    await api("executions", method="POST", body={"path": script}, expect=503)
    await api("executions", "abc", "state", expect=503)
    assert (await jp_fetch("api", "status")).code == 200  # Jupyter itself goes on
    assert attempts(state) == 1

    # the delay over, the next request tries again: it starts, now that the state is repaired
    (state / "executions" / "index.sqlite").unlink()
    backend.retry_after = 0.5
    await asyncio.sleep(0.6)
    service = await api("service")
    assert service["problem"] is None and service["embedded"] is True, service
    assert attempts(state) == 1 and len(servers_under(tmp_path)) == 1
    assert await api("executions") == []


# -- Jupyter stops: the client is closed, the embedded server is not ------------------------


@on_loop
async def test_at_shutdown_the_client_is_closed_and_the_embedded_server_left_running(
    reuse_embedded: connection.Connection,
    jp_serverapp: Any,
    api: Api,
    server_log: Records,
) -> None:
    await logged(server_log, "jupyter-mole: backend ")
    backend = backend_of(jp_serverapp)
    client = backend.client
    assert client is not None
    await api("executions")
    await jp_serverapp.cleanup_extensions()  # what Jupyter runs when it stops
    await logged(
        server_log, f"the embedded server (pid {reuse_embedded.pid}) keeps running", timeout=0
    )
    with pytest.raises(RuntimeError, match="closed"):
        await client.list()
    assert backend.closed
    # the kernels' server goes on: it outlives Jupyter, and the next Jupyter reuses it
    assert reuse_embedded.pid is not None and psutil.pid_exists(reuse_embedded.pid)
    assert await asyncio.to_thread(connection.is_alive, reuse_embedded)
