"""The extension in front of a remote backend: our server in its own process, over HTTPS.

The session's server (``mole_server``) has a self-signed certificate and a
password. Pinned by its fingerprint it is trusted; a wrong pin, no trust at all
or an unreachable address are reported (``/mole/api/service`` says what is
wrong), never fatal. ``Mole.api = "job"`` makes it stand for OpenMOLE's /job
API, which has neither execution details nor cancel without delete: the
answers say so (501) instead of failing, and what the extension knows (the
states it cached, the environment errors it saw) stands in for what OpenMOLE
does not keep. A kernel that Jupyter starts finds the backend through the
connection file the extension wrote.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403  (see test_labserver's docstring)

from jupyter_mole import connection
from jupyter_mole.client import MoleClient
from tests.kernels import MOLE_VARIABLES
from tests.servers import FAILING_SCRIPT, SLEEPY_SCRIPT, ServerProcess
from tests.test_labserver import (  # noqa: F401  (the fixtures are used by name)
    Api,
    Records,
    api_fixture,
    backend_of,
    jp_server_config_fixture,
    logged,
    mole_config_fixture,
    no_stray_servers_fixture,
    on_loop,
    server_log_fixture,
    write_project,
)

WRONG_PIN = ":".join(["AB"] * 32)


def remote(**options: Any) -> Callable[[pytest.FixtureRequest], dict[str, Any]]:
    """``c.Mole`` for the session's HTTPS server: its password in a file, and ``options``
    (``pin=True`` pins its real fingerprint, ``ca=True`` trusts its certificate as a CA)."""

    def config(request: pytest.FixtureRequest) -> dict[str, Any]:
        extra = dict(options)
        server: ServerProcess = request.getfixturevalue("mole_server")
        password_file = request.getfixturevalue("tmp_path") / "backend-password.txt"
        password_file.write_text(f"{server.password}\n")
        mole: dict[str, Any] = {"url": server.url, "password_file": str(password_file)}
        if extra.pop("pin", False):
            mole["fingerprint"] = server.fingerprint
        if extra.pop("ca", False):
            mole["ca_file"] = str(server.certfile)
        return {**mole, **extra}

    return config


def configured(*configs: Callable[..., dict[str, Any]], ids: list[str]) -> Any:
    return pytest.mark.parametrize("mole_config", configs, indirect=True, ids=ids)


@configured(remote(pin=True), ids=["pinned"])
@on_loop
async def test_a_pinned_https_backend_through_every_route(
    jp_serverapp: Any,
    api: Api,
    jp_root_dir: Path,
    jp_runtime_dir: Path,
    mole_server: ServerProcess,
    server_log: Records,
) -> None:
    backend = backend_of(jp_serverapp)
    path = jp_runtime_dir / connection.FILE_NAME
    # nobody asks: the extension checks its backend at load, and says what it found
    said = await logged(server_log, "jupyter-mole: backend ")
    assert said.startswith(f"jupyter-mole: backend jupyter-mole at {mole_server.url} (")
    assert "API token, job" in said
    assert path.exists() and not api.seen  # written before any request
    service = await api("service")
    assert service["kind"] == "jupyter-mole" and service["embedded"] is False
    assert service["url"] == mole_server.url and service["problem"] is None
    assert service["info"]["auth"] == "token" and "cancel" in service["info"]["features"]

    # the connection file points kernels at the same backend, pinned
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    recorded = connection.read_connection_file(path)
    assert recorded is not None and recorded.kind == "remote"
    assert (recorded.url, recorded.fingerprint) == (mole_server.url, mole_server.fingerprint)
    # and the kernels Jupyter starts learn its root, to tag notebooks as its file browser names them
    assert Path(os.environ[connection.ROOT_VARIABLE]) == jp_root_dir

    # start from the file tree; a kernel-side client sees it through the connection file
    execution = await api.start(write_project(jp_root_dir, "remote"))
    found = await asyncio.to_thread(connection.resolve)
    assert found.url == mole_server.url
    with MoleClient(found.url, found.password, fingerprint=found.fingerprint) as kernel_client:
        assert execution in await asyncio.to_thread(kernel_client.list)

    state = await api.wait(execution)
    assert state["state"] == "finished" and state["completed"] == 100
    mine = next(e for e in await api("executions") if e["id"] == execution)
    assert mine["tags"]["notebook"] == "remote/model.oms" and mine["script"] == "model.oms"
    assert (await api("executions", execution))["state"] == "finished"
    assert "pi_avg" in (await api("executions", execution, "output"))["output"]
    assert await api("executions", execution, "errors") == []
    assert "result.csv" in {e["name"] for e in await api("executions", execution, "files")}
    body = {"path": "result.csv", "to": "remote"}
    saved = await api("executions", execution, "download", method="POST", body=body, expect=201)
    assert (jp_root_dir / saved["path"]).read_text().startswith("pi_avg")
    assert (await api("executions", execution, "cancel", method="POST"))["state"] == "finished"
    await api("executions", execution, method="DELETE")
    await api("executions", execution, expect=404)
    api.assert_never_seen(mole_server.password, backend.client.token)


@configured(remote(ca=True), ids=["ca-file"])
@on_loop
async def test_a_backend_trusted_through_a_ca_file(jp_serverapp: Any, api: Api) -> None:
    await backend_of(jp_serverapp).connect()
    service = await api("service")
    assert service["problem"] is None and service["kind"] == "jupyter-mole"
    assert isinstance(await api("executions"), list)


@configured(remote(fingerprint=WRONG_PIN), remote(), ids=["wrong-pin", "untrusted"])
@on_loop
async def test_a_backend_that_cannot_be_trusted_is_reported_not_fatal(
    jp_serverapp: Any, api: Api, jp_fetch: Any, mole_config: dict[str, Any]
) -> None:
    await backend_of(jp_serverapp).connect()  # no exception: reported
    service = await api("service")
    expected = "fingerprint" if mole_config.get("fingerprint") else "certificate verify failed"
    assert service["problem"] and expected in service["problem"]
    assert service["info"] is None
    refused = await api("executions", expect=502)
    assert expected in refused["message"]
    assert (await jp_fetch("api", "status")).code == 200  # Jupyter itself goes on


@configured(remote(verify_tls=False), remote(verify_tls=False, api="job"), ids=["off", "off-job"])
@on_loop
async def test_tls_verification_off_works_with_a_warning_in_kernels_too(
    jp_serverapp: Any, api: Api, jp_runtime_dir: Path, mole_config: dict[str, Any]
) -> None:
    backend = backend_of(jp_serverapp)
    await backend.connect()
    with Records(backend.log) as records:  # what it logs at start, once more
        await backend.connect(force=True)
    assert any("Mole.verify_tls = False" in m for m in records.messages(logging.WARNING))
    assert (await api("service"))["problem"] is None
    assert isinstance(await api("executions"), list)

    # The connection file says so too: a kernel reaches the unverified backend as we do.
    recorded = connection.read_connection_file(jp_runtime_dir / connection.FILE_NAME)
    assert recorded is not None and recorded.fingerprint is None
    assert (recorded.verify_tls, recorded.api) == (False, mole_config.get("api", "auto"))
    with MoleClient(recorded.url, **recorded.client_options()) as kernel_client:
        assert isinstance(await asyncio.to_thread(kernel_client.list), list)
        assert kernel_client.kind == backend.kind


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = free_port()


@configured(lambda r: {"url": f"http://127.0.0.1:{PORT}"}, ids=["unreachable"])
@on_loop
async def test_an_unreachable_backend_is_reported_until_it_answers(
    jp_serverapp: Any, api: Api, start_server: Callable[..., ServerProcess]
) -> None:
    await backend_of(jp_serverapp).connect()
    service = await api("service")
    assert f"the backend at http://127.0.0.1:{PORT} does not answer" in service["problem"]
    assert "cannot reach" in (await api("executions", expect=502))["message"]
    await api("executions", method="POST", body={"path": "none/x.oms"}, expect=404)

    server = await asyncio.to_thread(
        start_server, https=False, password=None, extra=("--port", str(PORT))
    )
    assert server.url == f"http://127.0.0.1:{PORT}"
    service = await api("service")
    assert service["problem"] is None and service["kind"] == "jupyter-mole"
    assert await api("executions") == []


# -- an OpenMOLE backend: what it lacks is said, not failed ----------------------------------


@configured(remote(pin=True, api="job", poll_interval=0.2), ids=["openmole-job"])
@on_loop
async def test_openmole_job_api_degrades_clearly(
    jp_serverapp: Any, api: Api, jp_root_dir: Path, mole_server: ServerProcess
) -> None:
    await backend_of(jp_serverapp).connect()
    service = await api("service")
    assert service["kind"] == "openmole-job" and service["info"]["generations"] == ["job"]
    execution = await api.start(write_project(jp_root_dir, "sleepy", SLEEPY_SCRIPT))

    listed = {e["id"]: e for e in await api("executions")}
    assert "does not offer execution details" in listed[execution]["unsupported"]
    assert "state" not in listed[execution]  # nobody asked yet: the extension does not know
    assert (await api("executions", execution, "state"))["state"] == "running"
    details = await api("executions", execution, expect=501)
    assert details["message"].startswith("the backend does not offer this: execution details")
    cancel = await api("executions", execution, "cancel", method="POST", expect=501)
    assert "does not offer cancel without delete" in cancel["message"]
    assert "remove" in cancel["message"]  # ...and what to do instead
    assert (await api("executions", execution, "state"))["state"] == "running"  # untouched
    await asyncio.sleep(0.3)  # the list's poll interval over: the cached state joins the list
    assert {e["id"]: e for e in await api("executions")}[execution]["state"] == "running"

    assert await api("executions", execution, "errors") == []  # what the poller accumulated
    assert "model.oms" in {e["name"] for e in await api("executions", execution, "files")}
    output = await api("executions", execution, "output")
    assert output["offset"] == len(output["output"].encode())
    await api("executions", execution, method="DELETE")  # OpenMOLE's cancel: remove
    await api("executions", execution, "state", expect=404)

    # OpenMOLE keeps no error log: the errors route answers the environment errors that the
    # extension saw in the states (the failing job's), and the list shows the final state
    failing = await api.start(write_project(jp_root_dir, "failing", FAILING_SCRIPT))
    state = await api.wait(failing)
    assert state["state"] == "failed" and state["errors"]
    errors = await api("executions", failing, "errors")
    assert errors == state["errors"]
    assert any("no good value here" in e["message"] and e["count"] >= 1 for e in errors)
    await asyncio.sleep(0.3)
    mine = {e["id"]: e for e in await api("executions")}[failing]
    assert mine["state"] == "failed" and "does not offer execution details" in mine["unsupported"]
    await api("executions", failing, method="DELETE")
    api.assert_never_seen(mole_server.password)


@configured(remote(pin=True, api="token"), ids=["openmole-token"])
@on_loop
async def test_openmole_token_api_degrades_clearly(jp_serverapp: Any, api: Api) -> None:
    await backend_of(jp_serverapp).connect()
    assert (await api("service"))["kind"] == "openmole-token"
    assert isinstance(await api("executions"), list)
    files = await api("executions", "some-id", "files", expect=501)
    assert "token API has none" in files["message"]
    await api("executions", "some-id", expect=501)
    await api("executions", "some-id", "cancel", method="POST", expect=501)
    await api("executions", "some-id", "state", expect=404)


# -- a kernel that Jupyter starts: its magics find the extension's backend -------------------


@configured(remote(pin=True), ids=["pinned"])
@on_loop
async def test_a_kernel_jupyter_starts_reaches_the_extensions_backend(
    jp_serverapp: Any,
    jp_runtime_dir: Path,
    mole_server: ServerProcess,
    server_log: Records,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real ipykernel, started by Jupyter's kernel manager as for a notebook, with nothing
    set but Jupyter's runtime directory: ``%mole status`` reads the connection file that the
    extension wrote, and reaches the pinned backend with what it says."""
    for name in MOLE_VARIABLES:
        if name != connection.ROOT_VARIABLE:  # that one the extension sets, for the kernels
            monkeypatch.delenv(name, raising=False)
    await logged(server_log, "jupyter-mole: backend ")
    assert (jp_runtime_dir / connection.FILE_NAME).exists()
    manager = jp_serverapp.kernel_manager
    kernel_id = await manager.start_kernel(kernel_name="python3")
    kernel = manager.get_kernel(kernel_id).client()
    kernel.start_channels()
    printed: list[str] = []

    def keep(message: dict[str, Any]) -> None:
        if message["msg_type"] == "stream":
            printed.append(message["content"]["text"])
        elif message["msg_type"] == "error":
            printed.append("\n".join(message["content"]["traceback"]))

    try:
        await kernel.wait_for_ready(timeout=60)
        reply = await kernel.execute_interactive(
            "%load_ext jupyter_mole\n%mole status", output_hook=keep, timeout=90
        )
    finally:
        kernel.stop_channels()
        await manager.shutdown_kernel(kernel_id)
    said = "".join(printed)
    assert reply["content"]["status"] == "ok", said
    assert f"at {mole_server.url} (the connection file)" in said, said
