"""The Jupyter server extension with the embedded backend, through pytest-jupyter's ``jp_fetch``.

pytest-jupyter's fixtures are imported into the modules that use them (rather
than registered as a plugin for the whole suite, whose autouse fixtures would
then run around every other test); its async test hook comes with them as the
``on_loop`` decorator. pytest-jupyter points Jupyter's runtime and data
directories at the test's temporary directory, so the connection file and the
embedded server's state go there; every embedded server a test starts is
killed at its end (``no_stray_servers``).

The helpers and fixtures are in ``tests/labservers.py``; they are imported
here under their old names, which the other ``test_labserver_*`` modules
import from this one. The extension's configuration is tested in
``test_labserver_config.py``; its start and stop, and a backend that cannot
start, in ``test_labserver_lifecycle.py``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import stat
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import psutil
import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403  (see the module's docstring)

from jupyter_mole import connection
from jupyter_mole.client import MoleClient
from tests.labservers import (  # noqa: F401  (fixtures used by name; re-exported for test_labserver_*)
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
    stop_group,
    write_project,
)
from tests.servers import FAILING_SCRIPT, SLEEPY_SCRIPT

QUICK_SCRIPT = """
x = Val(int)
DirectSampling(evaluation=EmptyTask(inputs=[x]), sampling=x.in_([1]))
"""

# -- the embedded server: started, reused, restarted -------------------------------------------


@pytest.mark.parametrize(
    "mole_config",
    [
        lambda r: {
            "embedded_workers": 1,
            "state_directory": str(r.getfixturevalue("tmp_path") / "st"),
        }
    ],
    indirect=True,
    ids=["started"],
)
@pytest.mark.slow
@on_loop
async def test_embedded_started_restarted_and_found_by_a_kernel(
    jp_serverapp: Any,
    api: Api,
    jp_runtime_dir: Path,
    jp_root_dir: Path,
    tmp_path: Path,
    server_log: Records,
) -> None:
    """No url: the extension starts the embedded server (with the configured start options),
    writes the connection file a kernel reads, and starts the server again when it has died."""
    backend = backend_of(jp_serverapp)
    path = jp_runtime_dir / connection.FILE_NAME
    # nobody asks: the extension starts it at load, and says what it found
    said = await logged(server_log, "jupyter-mole: backend ")
    assert said.startswith("jupyter-mole: backend jupyter-mole at http://127.0.0.1:")
    assert path.exists() and not api.seen  # before any request
    at_load = connection.read_connection_file(path)
    assert at_load is not None and f"the embedded server, pid {at_load.pid}, started" in said
    service = await api("service")
    assert service["embedded"] is True and service["kind"] == "jupyter-mole"
    assert service["problem"] is None and service["info"]["engine"] == "embedded"
    assert service["url"].startswith("http://127.0.0.1:")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    recorded = connection.read_connection_file(path)
    assert recorded is not None and recorded.kind == "embedded" and recorded.password
    assert recorded.url == service["url"] and recorded.pid == at_load.pid
    process = psutil.Process(recorded.pid)
    cmdline = process.cmdline()
    assert cmdline[cmdline.index("--state-dir") + 1] == str(tmp_path / "st")
    assert cmdline[cmdline.index("--workers") + 1] == "1"
    assert cmdline[cmdline.index("--host") + 1] == "127.0.0.1"

    # a kernel finds the same server through the connection file, and sees what the sidebar started
    execution = await api.start(write_project(jp_root_dir, "k", QUICK_SCRIPT))
    found = await asyncio.to_thread(connection.resolve)
    assert (found.url, found.pid) == (recorded.url, recorded.pid)
    with MoleClient(found.url, found.password) as kernel_client:
        assert execution in await asyncio.to_thread(kernel_client.list)

    # the server dies: the next call starts it again, and a new connection file is written
    assert recorded.pid is not None
    stop_group(recorded.pid, timeout=0)  # SIGKILL at once
    listed = await api("executions")
    assert execution in [e["id"] for e in listed]  # the registry survived on disk
    again = connection.read_connection_file(path)
    assert again is not None and again.pid != recorded.pid and again.password != recorded.password
    assert psutil.pid_exists(again.pid)
    assert (await api("service"))["url"] == again.url

    # a server that stops answering (its process unknown) is found out by the failed call
    assert again.pid is not None and backend.connection is not None
    backend.connection.pid = None
    stop_group(again.pid, timeout=0)
    assert (await api("executions", execution))["id"] == execution
    third = connection.read_connection_file(path)
    assert third is not None and third.pid not in (recorded.pid, again.pid)
    api.assert_never_seen(recorded.password, again.password, third.password)


@pytest.mark.parametrize(
    "mole_config",
    [lambda r: {"state_directory": str(r.getfixturevalue("tmp_path") / "elsewhere")}],
    indirect=True,
    ids=["another-state-directory"],
)
@on_loop
async def test_an_embedded_server_already_running_is_reused(
    reuse_embedded: connection.Connection,
    jp_serverapp: Any,
    api: Api,
    tmp_path: Path,
    jp_runtime_dir: Path,
    server_log: Records,
) -> None:
    """Reused as it is, and said so at load; its executions are not where Mole.state_directory
    says (a kernel started it with the default), which is said too."""
    said = await logged(server_log, "jupyter-mole: backend ")
    assert f"pid {reuse_embedded.pid}, already running, reused" in said
    assert (jp_runtime_dir / connection.FILE_NAME).exists() and not api.seen
    elsewhere = await logged(server_log, "reusing the embedded server", logging.WARNING)
    assert str(reuse_embedded.state_directory) in elsewhere
    assert f"not in {tmp_path / 'elsewhere'} (Mole.state_directory)" in elsewhere
    backend = backend_of(jp_serverapp)
    service = await api("service")
    assert service["embedded"] is True and service["url"] == reuse_embedded.url
    assert backend.connection is not None and backend.connection.pid == reuse_embedded.pid
    assert not servers_under(tmp_path)  # nothing new was started
    assert not (tmp_path / "elsewhere").exists()


# -- every route, against the shared embedded server ----------------------------------------------


@on_loop
async def test_run_a_script_of_the_file_tree_and_bring_its_results_back(
    reuse_embedded: connection.Connection,
    jp_serverapp: Any,
    api: Api,
    jp_root_dir: Path,
    tmp_path: Path,
) -> None:
    await backend_of(jp_serverapp).connect()
    script = write_project(jp_root_dir)
    execution = await api(
        "executions", method="POST", body={"path": script, "tags": {"run": 1}}, expect=201
    )
    execution = execution["id"]
    state = await api.wait(execution)
    assert state["state"] == "finished" and state["completed"] == 100 and state["errors"] == []

    # the list, with details
    listed = {e["id"]: e for e in await api("executions")}
    mine = listed[execution]
    assert mine["state"] == "finished" and mine["script"] == "model.oms"
    assert mine["tags"] == {"notebook": "project/model.oms", "run": "1"}
    assert mine["submitted"] <= mine["started"] <= mine["ended"] and mine["completed"] == 100
    details = await api("executions", execution)
    assert details["id"] == execution and details["state"] == "finished"

    # the output, whole and from an offset
    output = await api("executions", execution, "output")
    text, end = output["output"], output["offset"]
    assert "pi_avg" in text and end == len(text.encode())
    tail = await api("executions", execution, "output", params={"offset": "5"})
    assert tail == {"output": text[5:], "offset": end}
    assert (await api("executions", execution, "output", params={"offset": str(end)}))[
        "output"
    ] == ""
    assert await api("executions", execution, "errors") == []

    # the work directory
    entries = {e["name"]: e for e in await api("executions", execution, "files")}
    assert {"model.oms", "result.csv", "data"} <= set(entries)
    assert entries["data"]["type"] == "directory" and entries["result.csv"]["type"] == "file"
    inside = await api("executions", execution, "files", params={"path": "data"})
    assert [e["name"] for e in inside] == ["input.txt"]

    # download into the file tree: a file, never overwritten silently, then a folder
    def download(path: str, to: str, expect: int = 201, **more: Any) -> Awaitable[Any]:
        body = {"path": path, "to": to, **more}
        return api("executions", execution, "download", method="POST", body=body, expect=expect)

    assert await download("result.csv", "results/run1") == {"path": "results/run1/result.csv"}
    saved = jp_root_dir / "results" / "run1" / "result.csv"
    csv = saved.read_text()
    assert csv.splitlines()[0].replace('"', "").split(",") == ["pi_avg", "pi_med"]
    saved.write_text("mine\n")
    refused = await download("result.csv", "results/run1", expect=409)
    assert "already exists" in refused["message"] and saved.read_text() == "mine\n"
    await download("result.csv", "results/run1", overwrite=True)
    assert saved.read_text() == csv
    assert await download("data", "") == {"path": "data"}
    assert (jp_root_dir / "data" / "input.txt").read_text() == "some input\n"
    assert (await download("data", "", expect=409))["message"]
    whole = await download("", "results")
    assert (jp_root_dir / whole["path"] / "result.csv").read_text() == csv

    # ...and never outside Jupyter's root directory
    outside = tmp_path / "outside"
    outside.mkdir()
    (jp_root_dir / "link").symlink_to(outside)
    for to in ("../outside", "results/../../outside", "link", "link/deeper"):
        refused = await download("result.csv", to, expect=403)
        assert "inside Jupyter's root directory" in refused["message"]
    assert not any(outside.iterdir())
    for path in ("../../etc/passwd", "data/../../x"):
        assert "inside the work directory" in (await download(path, "x", expect=400))["message"]
    assert "is a file" in (await download("result.csv", "results/run1/result.csv", 409))["message"]
    assert not (jp_root_dir / "x").exists()

    # remove it: it is gone from every route
    assert await api("executions", execution, method="DELETE") == {"removed": execution}
    await api("executions", execution, "state", expect=404)
    assert execution not in [e["id"] for e in await api("executions")]
    api.assert_never_seen(reuse_embedded.password, backend_of(jp_serverapp).client.token)


@on_loop
async def test_cancel_failure_and_error_log(
    reuse_embedded: connection.Connection, jp_serverapp: Any, api: Api, jp_root_dir: Path
) -> None:
    await backend_of(jp_serverapp).connect()
    sleepy = await api.start(write_project(jp_root_dir, "sleepy", SLEEPY_SCRIPT))
    failing = await api.start(write_project(jp_root_dir, "failing", FAILING_SCRIPT))
    assert (await api("executions", sleepy, "state"))["state"] == "running"
    cancelled = await api("executions", sleepy, "cancel", method="POST")
    assert cancelled["id"] == sleepy and cancelled["state"] == "cancelled"
    assert (await api("executions", sleepy, "state"))["state"] == "cancelled"  # not the cached one
    assert any(e["name"] == "model.oms" for e in await api("executions", sleepy, "files"))

    state = await api.wait(failing)
    assert state["state"] == "failed" and "no good value here" in state["error"]["message"]
    log = await api("executions", failing, "errors")
    assert any("no good value here" in e["message"] for e in log)
    assert all(
        set(e) == {"message", "level", "environment", "stackTrace", "time", "count"} for e in log
    )
    for execution in (sleepy, failing):
        await api("executions", execution, method="DELETE")


@pytest.mark.parametrize(
    "mole_config", [{"embedded_workers": 1, "poll_interval": 0.2}], indirect=True, ids=["fast"]
)
@on_loop
async def test_an_execution_removed_by_another_client_leaves_the_cache(
    reuse_embedded: connection.Connection, jp_serverapp: Any, api: Api, jp_root_dir: Path
) -> None:
    backend = backend_of(jp_serverapp)
    await backend.connect()
    execution = await api.start(write_project(jp_root_dir, "quick", QUICK_SCRIPT))
    assert (await api.wait(execution))["state"] == "finished"
    assert execution in backend.pollers
    with MoleClient(reuse_embedded.url, reuse_embedded.password) as kernel_client:
        kernel_client.remove(execution)  # not through the extension: it cannot know
    await asyncio.sleep(0.3)
    assert execution not in [e["id"] for e in await api("executions")]
    assert execution not in backend.pollers
    await api("executions", execution, "state", expect=404)


@on_loop
async def test_every_route_says_what_is_wrong(
    reuse_embedded: connection.Connection, jp_serverapp: Any, api: Api, jp_root_dir: Path
) -> None:
    await backend_of(jp_serverapp).connect()
    missing = "no-such-execution"
    for route in ("", "state", "output", "errors", "files"):
        parts = ("executions", missing, route) if route else ("executions", missing)
        assert (await api(*parts, expect=404))["message"]
    await api("executions", missing, "cancel", method="POST", expect=404)
    await api("executions", missing, method="DELETE", expect=404)
    body = {"path": "result.csv", "to": "here"}
    await api("executions", missing, "download", method="POST", body=body, expect=404)
    assert not (jp_root_dir / "here" / "result.csv").exists()

    start = functools.partial(api, "executions", method="POST")
    for bad in ("[]", "not json", {}, {"path": "notebook.ipynb"}, {"path": 3}):
        assert "message" in await start(body=bad, expect=400)
    assert "message" in await start(body={"path": "x.oms", "tags": ["a"]}, expect=400)
    assert "no script" in (await start(body={"path": "missing/model.oms"}, expect=404))["message"]
    assert "root directory" in (await start(body={"path": "../up/x.oms"}, expect=403))["message"]
    broken = write_project(jp_root_dir, "broken", "this is not (a script\n")
    refused = await start(body={"path": broken}, expect=417)  # the backend's status, passed on
    assert "syntax error in model.oms" in refused["message"]

    assert (
        "whole number"
        in (await api("executions", missing, "output", params={"offset": "x"}, expect=400))[
            "message"
        ]
    )
    outside = await api("executions", missing, "files", params={"path": "../x"}, expect=400)
    assert "inside the work directory" in outside["message"]
    await api("executions", missing, "download", method="POST", body="[1]", expect=400)


# -- one query per execution per poll interval, every error for every view ----------------------


@pytest.mark.parametrize(
    "mole_config", [{"embedded_workers": 1, "poll_interval": 30}], indirect=True
)
@on_loop
async def test_many_views_one_backend_query_per_poll_interval(
    reuse_embedded: connection.Connection, jp_serverapp: Any, api: Api, jp_root_dir: Path
) -> None:
    backend = backend_of(jp_serverapp)
    await backend.connect()
    execution = await api.start(write_project(jp_root_dir, "sleepy", SLEEPY_SCRIPT))
    before = (await api("service"))["queries"]
    views = 20
    states = await asyncio.gather(*(api("executions", execution, "state") for _ in range(views)))
    lists = await asyncio.gather(*(api("executions") for _ in range(views)))
    assert all(s["state"] == "running" for s in states)
    assert all(execution in [e["id"] for e in listed] for listed in lists)
    after = (await api("service"))["queries"]
    assert after == {"state": before["state"] + 1, "list": before["list"] + 1}
    # the interval over, the next view asks again (once)
    backend.config.poll_interval = 0.2
    await asyncio.sleep(0.3)
    await asyncio.gather(*(api("executions", execution, "state") for _ in range(views)))
    assert backend.queries == after["state"] + 1
    await api("executions", execution, "cancel", method="POST")
    await api("executions", execution, method="DELETE")


class ErrorsEveryQuery:
    """Stands for the backend's client: each state query reports the errors since the last one."""

    kind = "jupyter-mole"

    def __init__(self) -> None:
        self.queries = 0

    async def state(self, execution_id: str) -> Any:
        from jupyter_mole.protocol import EnvironmentStatus, ErrorInfo, ExecutionState

        self.queries += 1
        errors = [ErrorInfo(f"node {self.queries} lost", "trace", "WARNING")]
        errors.append(ErrorInfo("quota exceeded", None, "SEVERE"))
        return ExecutionState("running", environments=[EnvironmentStatus("cluster", errors=errors)])


@pytest.mark.parametrize(
    "mole_config", [{"embedded_workers": 1, "poll_interval": 0.05}], indirect=True
)
@on_loop
async def test_every_view_sees_every_environment_error(
    reuse_embedded: connection.Connection, jp_serverapp: Any, api: Api
) -> None:
    """The backend reports an environment error once (to whoever asks first); the extension
    keeps them all, so a sidebar opened late and a widget polling often see the same list."""
    backend = backend_of(jp_serverapp)
    await backend.connect()
    real, backend.client = backend.client, ErrorsEveryQuery()  # type: ignore[assignment]
    try:
        widget = []  # a widget polling more often than the poll interval
        for _ in range(3):
            await asyncio.sleep(0.06)
            widget.append(await api("executions", "abc", "state"))
        sidebar = await api("executions", "abc", "state")
        assert backend.client.queries == 3  # the sidebar's view was still fresh
        seen = sidebar["errors"]
        assert [e["message"] for e in seen] == [
            "node 1 lost",
            "quota exceeded",
            "node 2 lost",
            "node 3 lost",
        ]
        assert seen[0] == {
            "message": "node 1 lost",
            "level": "WARNING",
            "stackTrace": "trace",
            "count": 1,
        }
        assert seen[1]["count"] == 3  # the same error, reported at every query
        assert widget[-1]["errors"] == seen
        assert [e["message"] for e in widget[0]["errors"]] == ["node 1 lost", "quota exceeded"]
    finally:
        backend.client = real


# -- any base_url ---------------------------------------------------------------------------------


@pytest.mark.parametrize("jp_base_url", ["/hub/user/someone/", "/node/host.example/8888/"])
@on_loop
async def test_any_base_url(
    reuse_embedded: connection.Connection,
    jp_serverapp: Any,
    api: Api,
    jp_base_url: str,
    http_server_client: Any,
    jp_auth_header: dict[str, str],
) -> None:
    await backend_of(jp_serverapp).connect()
    assert (await api("service"))["url"] == reuse_embedded.url
    assert isinstance(await api("executions"), list)
    await api("executions", method="POST", body={"path": "x.py"}, expect=400)
    bare = await http_server_client.fetch(
        "/mole/api/service", headers=jp_auth_header, raise_error=False
    )
    assert bare.code == 404
