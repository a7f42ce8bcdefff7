"""The client against real server processes on loopback: both classes, all three kinds of server.

Our server stands in for OpenMOLE: forcing ``api="job"`` or ``api="token"``
makes the client speak only OpenMOLE's routes, which the tests check by
recording every request the client sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import psutil
import pytest

from jupyter_mole.client import (
    AsyncMoleClient,
    AuthenticationError,
    ConnectionFailed,
    DestinationExists,
    MoleClient,
    MoleClientError,
    NotFound,
    RateLimited,
    Refused,
    Unsupported,
    WaitTimeout,
)
from tests.clients import client_for
from tests.servers import FAILING_SCRIPT, PASSWORD, PI_SCRIPT, SLEEPY_SCRIPT, ServerProcess

SEED_ROUTES = {"/token", "/start", "/state", "/output", "/download", "/remove", "/list"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A notebook's folder: the pi script and a data folder."""
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    (folder / "pi.oms").write_text(PI_SCRIPT)
    (folder / "data" / "input.txt").write_text("some input\n")
    return folder


def record(client: MoleClient | AsyncMoleClient) -> list[httpx.Request]:
    """Every request the client sends from now on."""
    sent: list[httpx.Request] = []
    if isinstance(client, AsyncMoleClient):

        async def hook(request: httpx.Request) -> None:
            sent.append(request)

        client._http.event_hooks["request"].append(hook)
    else:
        client._http.event_hooks["request"].append(sent.append)
    return sent


def form_names(request: httpx.Request) -> set[str]:
    """The form fields a request sends (multipart or urlencoded)."""
    fields = getattr(request.stream, "fields", None)  # httpx's multipart stream keeps its fields
    if fields is not None:
        return {f.name for f in fields}
    return set(parse_qs(request.read().decode()))


def check_results(execution: str, tmp_path: Path, result: Path, data: Path, whole: Path) -> None:
    assert result.read_text().splitlines()[0] == "pi_avg,pi_med"
    assert (data / "input.txt").read_text() == "some input\n"
    assert (whole / "pi.oms").read_text() == PI_SCRIPT
    assert (whole / "result.csv").read_text() == result.read_text()
    leftovers = [p.name for p in tmp_path.rglob(".*") if p.name.startswith(".")]
    assert leftovers == [], f"temporary files left behind: {leftovers}"


def run_flow(client: MoleClient, project: Path, tmp_path: Path) -> str:
    """The seed's whole flow: start, state until finished, output, download, list, remove."""
    progress: list[tuple[int, int]] = []
    execution = client.start(
        project, "pi.oms", tags={"notebook": "pi.ipynb"}, progress=lambda *a: progress.append(a)
    )
    assert progress and progress[-1][0] == progress[-1][1] > 0
    states = []
    final = client.wait(execution, poll=0.1, timeout=120, on_state=states.append)
    assert final.state == "finished" and final.completed == 100, final
    assert states[-1] is final
    text, end = client.output(execution)
    assert "pi_avg" in text and end == len(text.encode())
    assert client.output(execution, end) == ("", end)
    assert client.output(execution, 4) == (text[4:], end)
    assert execution in client.list()
    out = tmp_path / "out"
    result = client.download(execution, "result.csv", dest=out / "result.csv")
    data = client.download(execution, "data", dest=out / "data")
    whole = client.download(execution, dest=out / "whole")
    check_results(execution, tmp_path, result, data, whole)
    client.remove(execution)
    with pytest.raises(NotFound):
        client.state(execution)
    assert execution not in client.list()
    return execution


# -- the flow, on every kind of server -----------------------------------------------------
def test_flow_on_our_server(mole_server: ServerProcess, project: Path, tmp_path: Path) -> None:
    with client_for(mole_server) as client:
        assert client.kind is None
        execution = client.start(project, "pi.oms", tags={"notebook": "pi.ipynb"})
        assert client.kind == "jupyter-mole"
        client.wait(execution, poll=0.1, timeout=120)
        info = client.info(execution)
        assert info.tags == {"notebook": "pi.ipynb"} and info.state == "finished"
        details = client.list(details=True)
        assert any(i.id == execution and i.script == "pi.oms" for i in details)
        names = {e.name: e for e in client.listing(execution)}
        assert names["result.csv"].type == "file" and names["data"].type == "directory"
        assert client.listing(execution, "data")[0].name == "input.txt"
        assert client.errors(execution) == []
        assert client.service_info().generations == ["token", "job"]
        client.remove(execution)
        run_flow(client, project, tmp_path)


def test_flow_async(mole_server: ServerProcess, project: Path, tmp_path: Path) -> None:
    async def flow() -> None:
        async with AsyncMoleClient(
            mole_server.url, mole_server.password, fingerprint=mole_server.fingerprint
        ) as client:
            progress: list[tuple[int, int]] = []
            execution = await client.start(
                project, "pi.oms", progress=lambda *a: progress.append(a)
            )
            assert client.kind == "jupyter-mole"
            assert progress[-1][0] == progress[-1][1] > 0
            final = await client.wait(execution, poll=0.1, timeout=120)
            assert final.state == "finished" and (await client.state(execution)).completed == 100
            text, end = await client.output(execution)
            assert "pi_avg" in text and await client.output(execution, end) == ("", end)
            assert execution in await client.list()
            out = tmp_path / "out"
            result = await client.download(execution, "result.csv", dest=out / "result.csv")
            data = await client.download(execution, "data", dest=out / "data")
            whole = await client.download(execution, dest=out / "whole")
            check_results(execution, tmp_path, result, data, whole)
            await client.remove(execution)
            with pytest.raises(NotFound):
                await client.state(execution)

    asyncio.run(flow())


def test_flow_as_openmole_job_api(
    mole_server: ServerProcess, project: Path, tmp_path: Path
) -> None:
    """Forced to OpenMOLE's /job API: no /service-info, none of our extensions."""
    with client_for(mole_server, api="job") as client:
        sent = record(client)
        assert client.kind == "openmole-job"
        run_flow(client, project, tmp_path)
        execution = client.start(project, "pi.oms")
        entries = client.listing(execution)  # PROPFIND is generation 2
        assert {e.name for e in entries} >= {"pi.oms", "data"}
        client.remove(execution)
    paths = {r.url.path for r in sent}
    assert "/service-info" not in paths
    assert not [p for p in paths if p.endswith(("/cancel", "/errors"))]
    assert all(p == "/token" or p.startswith("/job") for p in paths), paths
    assert not [r for r in sent if {"details", "offset", "tag"} & set(r.url.params)]
    assert [form_names(r) for r in sent if r.url.path == "/job" and r.method == "POST"] == [
        {"script", "workDirectory"}
    ] * 2
    assert {r.method for r in sent} <= {"GET", "POST", "DELETE", "PROPFIND"}
    assert all(
        r.headers["authorization"].startswith("Bearer ") for r in sent if r.url.path != "/token"
    )


def test_flow_as_openmole_token_api(
    mole_server: ServerProcess, project: Path, tmp_path: Path
) -> None:
    """Forced to OpenMOLE's token API: the seed's POST routes only, the token as a form field."""
    with client_for(mole_server, api="token") as client:
        sent = record(client)
        run_flow(client, project, tmp_path)
        assert client.kind == "openmole-token"
        with pytest.raises(Unsupported, match="cancel without delete"):
            client.cancel("any")
        with pytest.raises(Unsupported):
            client.listing("any")
    assert {r.method for r in sent} == {"POST"}
    assert {r.url.path for r in sent} <= SEED_ROUTES
    assert not [r for r in sent if r.url.params or "authorization" in r.headers]
    assert sent[0].url.path == "/token" and form_names(sent[0]) == {"password"}
    assert all("token" in form_names(r) for r in sent[1:])
    starts = [form_names(r) for r in sent if r.url.path == "/start"]
    assert starts == [{"script", "workDirectory", "token"}]


def test_plain_http_without_password(
    start_server: Callable[..., ServerProcess], project: Path, tmp_path: Path
) -> None:
    server = start_server(https=False, password=None)
    with MoleClient(server.url) as client:
        sent = record(client)
        run_flow(client, project, tmp_path)
        assert client.kind == "jupyter-mole" and client.token is None
        assert client.service_info().auth == "none"
    assert "/token" not in {r.url.path for r in sent}


# -- tokens and passwords -----------------------------------------------------------------
@pytest.mark.parametrize("api", ["auto", "job", "token"])
def test_token_renewed_after_401(mole_server: ServerProcess, api: str) -> None:
    with client_for(mole_server, api=api) as client:
        client.list()
        first = client.token
        assert first
        client.token = "revoked-or-expired"
        sent = record(client)
        assert isinstance(client.list(), list)
        assert client.token not in (first, "revoked-or-expired")
    assert [r.url.path for r in sent][1:2] == ["/token"]  # the refused call, renew, then again
    assert len(sent) == 3


@pytest.mark.parametrize("api", ["auto", "token"])
def test_upload_sent_again_after_renewal(
    mole_server: ServerProcess, project: Path, api: str
) -> None:
    """A 401 after a whole upload: the client renews its token and sends the file again."""
    progress: list[tuple[int, int]] = []
    with client_for(mole_server, api=api) as client:
        client.list()
        client.token = "revoked-or-expired"
        sent = record(client)
        execution = client.start(project, "pi.oms", progress=lambda *a: progress.append(a))
        assert client.wait(execution, poll=0.1, timeout=120).state == "finished"
        client.remove(execution)
    starts = [r.url.path for r in sent if r.url.path in ("/job", "/start", "/token")]
    assert starts[:3] == [starts[0], "/token", starts[0]]
    total = progress[-1][1]
    assert progress.count((total, total)) == 2 and progress.count((0, total)) == 2


def test_async_token_renewed_after_401(mole_server: ServerProcess) -> None:
    async def renew() -> None:
        async with AsyncMoleClient(
            mole_server.url, password=PASSWORD, fingerprint=mole_server.fingerprint
        ) as client:
            await client.list()
            client.token = "revoked-or-expired"
            assert isinstance(await client.list(), list)
            assert client.token != "revoked-or-expired"

    asyncio.run(renew())


def test_wrong_password(start_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = start_server()
    wrong = "not the password"
    with MoleClient(server.url, wrong, fingerprint=server.fingerprint) as client:
        with pytest.raises(AuthenticationError) as caught:
            client.list()
        assert caught.value.status == 403 and "Server password is incorrect" in str(caught.value)
        assert wrong not in str(caught.value) and wrong not in repr(client)
        for _ in range(5):  # the server then refuses this address for a while
            with pytest.raises(AuthenticationError) as caught:
                client.list()
        assert isinstance(caught.value, RateLimited) and caught.value.retry_after
        assert caught.value.status == 429


def test_no_password_for_a_server_that_wants_one(mole_server: ServerProcess) -> None:
    with (
        MoleClient(mole_server.url, fingerprint=mole_server.fingerprint) as client,
        pytest.raises(AuthenticationError, match="MOLE_PASSWORD"),
    ):
        client.list()


def test_password_file_and_environment(mole_server: ServerProcess, tmp_path: Path) -> None:
    secret = tmp_path / "password.txt"
    secret.write_text(PASSWORD + "\n")
    env = {
        "MOLE_URL": mole_server.url,
        "MOLE_PASSWORD_FILE": str(secret),
        "MOLE_FINGERPRINT": mole_server.fingerprint or "",
    }
    with MoleClient.from_environment(env) as client:
        assert isinstance(client.list(), list) and client.kind == "jupyter-mole"
    with pytest.raises(ValueError, match="MOLE_URL"):
        MoleClient.from_environment({})
    env = {"MOLE_URL": mole_server.url, "MOLE_CA_FILE": str(mole_server.certfile)}
    with MoleClient.from_environment(env, password=PASSWORD) as client:
        assert isinstance(client.list(), list)


# -- what goes wrong in executions -------------------------------------------------------
@pytest.mark.parametrize("api", ["auto", "token"])
def test_failing_script(mole_server: ServerProcess, tmp_path: Path, api: str) -> None:
    (tmp_path / "fail.oms").write_text(FAILING_SCRIPT)
    with client_for(mole_server, api=api) as client:
        execution = client.start(tmp_path, "fail.oms")
        state = client.wait(execution, poll=0.1, timeout=120)
        client.remove(execution)
    assert state.state == "failed" and state.error is not None
    assert "no good value here" in state.error.message
    assert "fragile" in (state.error.stack_trace or "")


@pytest.mark.parametrize("api", ["auto", "job", "token"])
def test_bad_script_is_refused(mole_server: ServerProcess, tmp_path: Path, api: str) -> None:
    (tmp_path / "bad.oms").write_text("x = Val(int)\ny = = 3\n")
    with client_for(mole_server, api=api) as client, pytest.raises(Refused) as caught:
        client.start(tmp_path, "bad.oms")
    assert caught.value.status == 417
    assert "bad.oms" in str(caught.value) and "line 2" in str(caught.value)
    assert "SyntaxError" in (caught.value.stack_trace or "")


def test_script_missing(mole_server: ServerProcess, project: Path, tmp_path: Path) -> None:
    with client_for(mole_server) as client:
        with pytest.raises(FileNotFoundError, match=r"no script nothere\.oms"):
            client.start(project, "nothere.oms")  # found out before uploading
        packed = tmp_path / "project.tgz"
        with tarfile.open(packed, "w:gz") as tar:
            tar.add(project / "pi.oms", arcname="pi.oms")
        with pytest.raises(Refused, match=r"nothere\.oms is not in the workDirectory.*pi\.oms"):
            client.start(packed, "nothere.oms")
        with pytest.raises(FileNotFoundError):
            client.start(tmp_path / "absent", "pi.oms")


@pytest.mark.parametrize("api", ["auto", "job", "token"])
def test_missing_execution(mole_server: ServerProcess, tmp_path: Path, api: str) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    with client_for(mole_server, api=api) as client:
        for call in (client.state, client.output, client.remove):
            with pytest.raises(NotFound, match="Execution not found"):
                call(missing)
        with pytest.raises(NotFound):
            client.download(missing, "result.csv", dest=tmp_path / "result.csv")
    assert not list(tmp_path.iterdir())


def test_download_never_overwrites_silently(
    mole_server: ServerProcess, project: Path, tmp_path: Path
) -> None:
    with client_for(mole_server) as client:
        execution = client.start(project, "pi.oms")
        client.wait(execution, poll=0.1, timeout=120)
        existing = tmp_path / "result.csv"
        existing.write_text("mine")
        with pytest.raises(DestinationExists, match="overwrite"):
            client.download(execution, "result.csv", dest=existing)
        assert existing.read_text() == "mine"
        folder = tmp_path / "data"
        folder.mkdir()
        (folder / "keep.txt").write_text("mine")
        with pytest.raises(DestinationExists):
            client.download(execution, "data", dest=folder)
        assert [p.name for p in folder.iterdir()] == ["keep.txt"]
        with pytest.raises(DestinationExists, match="is a folder"):
            client.download(execution, "result.csv", dest=folder, overwrite=True)
        client.download(execution, "result.csv", dest=existing, overwrite=True)
        assert existing.read_text().startswith("pi_avg")
        client.download(execution, "data", dest=folder, overwrite=True)
        assert [p.name for p in folder.iterdir()] == ["input.txt"]
        with pytest.raises(NotFound, match="File not found"):
            client.download(execution, "nothing.txt", dest=tmp_path / "nothing.txt")
        with pytest.raises(ValueError, match="inside the work directory"):
            client.download(execution, "../../etc/passwd", dest=tmp_path / "passwd")
        client.remove(execution)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "project", "result.csv"]


def wait_until_running(client: MoleClient, execution: str, jobs: int = 2) -> None:
    """Until the execution's jobs run (its sleeps have started), at most 60 s."""
    deadline = time.monotonic() + 60
    while client.state(execution).running < jobs:
        assert time.monotonic() < deadline, "the jobs did not start in 60 s"
        time.sleep(0.1)


def test_cancel_keeps_the_execution(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """On a private server: a cancelled job may hold a worker (see the xfail below)."""
    server = start_server()
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "sleepy.oms").write_text(SLEEPY_SCRIPT)
    with client_for(server) as client:
        execution = client.start(folder, "sleepy.oms")
        wait_until_running(client, execution)
        with pytest.raises(WaitTimeout, match="still running"):
            client.wait(execution, poll=0.1, timeout=0.3)
        assert client.cancel(execution).state == "cancelled"
        assert client.state(execution).state == "cancelled"
        assert {e.name for e in client.listing(execution)} == {"sleepy.oms"}  # its files stay
        running = client.start(folder, "sleepy.oms")
        wait_until_running(client, running)
        client.remove(running)  # cancels and deletes at once
        with pytest.raises(NotFound):
            client.state(running)
    with client_for(server, api="job") as client:
        with pytest.raises(Unsupported, match="cancel without delete") as caught:
            client.cancel(execution)
        assert "remove(id)" in str(caught.value)
        with pytest.raises(Unsupported, match="extension"):
            client.errors(execution)
        client.remove(execution)


def test_errors_are_client_errors() -> None:
    for kind in (ConnectionFailed, AuthenticationError, NotFound, Refused, Unsupported):
        assert issubclass(kind, MoleClientError)
    assert issubclass(RateLimited, AuthenticationError)
    assert issubclass(WaitTimeout, TimeoutError)


def test_upload_progress_and_odd_names(
    mole_server: ServerProcess, project: Path, tmp_path: Path
) -> None:
    (project / "data" / "big.bin").write_bytes(os.urandom(1 << 20))
    (project / "data" / "with space é.txt").write_text("odd name\n")
    progress: list[tuple[int, int]] = []
    with client_for(mole_server) as client:
        execution = client.start(project, "pi.oms", progress=lambda *a: progress.append(a))
        client.wait(execution, poll=0.1, timeout=120)
        for api in ("auto", "job", "token"):
            with client_for(mole_server, api=api) as other:
                got = other.download(execution, "data/with space é.txt", dest=tmp_path / api)
                assert got.read_text() == "odd name\n"
        entries = client.listing(execution, "data", last=1)
        assert len(entries) == 1
        client.remove(execution)
    sent = [s for s, _ in progress]
    assert len(progress) > 4 and sent == sorted(sent)
    assert progress[-1][0] == progress[-1][1] > 1 << 20


def test_bad_archive_and_too_large(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = start_server(https=False, password=None, extra=("--max-upload", "100000"))
    (tmp_path / "bad.tgz").write_bytes(b"not a gzip at all" * 10)
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "a.oms").write_text("x = Val(int)\nx\n")
    (folder / "noise.bin").write_bytes(os.urandom(300_000))
    for api in ("auto", "token"):
        with MoleClient(server.url, api=api) as client:
            with pytest.raises(Refused, match="not gzip") as caught:
                client.start(tmp_path / "bad.tgz", "a.oms")
            assert caught.value.status == 417
            with pytest.raises(Refused, match="larger than 100000 bytes") as caught:
                client.start(folder, "a.oms")
            assert caught.value.status == 413


def test_errors_log_and_per_token_cursor(mole_server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "fail.oms").write_text(FAILING_SCRIPT)
    with client_for(mole_server) as client, client_for(mole_server) as other:
        execution = client.start(tmp_path, "fail.oms")
        states: list = []
        client.wait(execution, poll=0.1, timeout=120, on_state=states.append)
        seen = [e.message for s in states for env in s.environments for e in env.errors]
        assert seen == ["task fragile failed: ValueError: no good value here"]
        assert not client.state(execution).environments[0].errors  # already read
        again = other.state(execution).environments[0].errors  # another token, its own cursor
        assert [e.message for e in again] == seen
        (logged,) = client.errors(execution)
        assert logged.level == "SEVERE" and logged.environment == "local" and logged.count == 1
        assert "no good value here" in (logged.stack_trace or "") and logged.time
        client.remove(execution)


def sleeping_jobs(server: ServerProcess) -> list[int]:
    """The ``sleep 30`` processes SLEEPY_SCRIPT's jobs started under the server."""
    found = []
    for child in psutil.Process(server.process.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "sleep 30" in " ".join(child.cmdline()):
                found.append(child.pid)
    return found


def test_cancel_right_after_start_stops_every_job(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = start_server(https=False, password=None)
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "pi.oms").write_text(PI_SCRIPT)
    (folder / "sleepy.oms").write_text(SLEEPY_SCRIPT)
    with MoleClient(server.url) as client:
        client.wait(client.start(folder, "pi.oms"), poll=0.1, timeout=120)
        for attempt in range(60):  # a race that shows about once in eight attempts
            execution = client.start(folder, "sleepy.oms")
            time.sleep((0, 0.05, 0.1, 0.2)[attempt % 4])
            assert client.cancel(execution).state == "cancelled"
            time.sleep(0.5)
            assert sleeping_jobs(server) == [], "a job of a cancelled execution still runs"
