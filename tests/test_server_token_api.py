"""OpenMOLE's token API (generation 1, the seed) on the wire, as a client written for OpenMOLE sees it.

Plain ``httpx`` against a real ``jupyter-mole serve`` process: every route is a
POST whose parameters come in the form body, the query string or multipart
parts; errors are ``{"message"}`` with the statuses of PROTOCOL.md, word for word.
"""

from __future__ import annotations

import gzip
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import (
    FAILING_SCRIPT,
    PASSWORD,
    PI_SCRIPT,
    RETRY_SCRIPT,
    ServerProcess,
    make_archive,
    tar_entries,
)

pytestmark = pytest.mark.timeout(120)

NO_TOKEN = {"message": "This service requires a valid token"}
NOT_FOUND = {"message": "Execution not found"}
ID_MISSING = {"message": "id is missing"}

FILES = {
    "pi.oms": PI_SCRIPT,
    "failing.oms": FAILING_SCRIPT,
    "retry.oms": RETRY_SCRIPT,
    "broken.oms": "seed = Val(int)\nmodel = (\n",
    "scala.oms": "val seed = Val[Int]\nval model = EmptyTask()\nmodel\n",
    "data/a.txt": "alpha\n",
    "data/sub/b.txt": "beta\n",
}


# -- plumbing ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_archive(tmp_path_factory.mktemp("token-api") / "work", FILES).read_bytes()


def send(
    http: httpx.Client,
    route: str,
    style: str = "form",
    upload: bytes | None = None,
    **params: str,
) -> httpx.Response:
    """POST ``params`` the way ``style`` says: urlencoded form, query string or multipart."""
    files: dict[str, Any] = {}
    if upload is not None:
        files["workDirectory"] = ("workDirectory.tgz", upload, "application/gzip")
    if style == "query":
        return http.post(route, params=params, files=files or None)
    if style == "multipart":
        files.update({k: (None, v) for k, v in params.items()})
        return http.post(route, files=files)
    if files:  # a file needs multipart: the other parameters go as its text parts
        return http.post(route, data=params, files=files)
    return http.post(route, data=params)


def start(http: httpx.Client, token: str, archive: bytes, script: str, style: str = "form") -> str:
    answer = send(http, "/start", style, archive, token=token, script=script)
    assert answer.status_code == 200, answer.text
    execution_id = answer.json()["id"]
    assert answer.json() == {"id": execution_id}
    uuid.UUID(execution_id)
    return execution_id


def poll(
    http: httpx.Client,
    token: str,
    execution_id: str,
    until: Callable[[dict[str, Any]], bool] = lambda s: s["state"] != "running",
    timeout: float = 60,
    style: str = "form",
) -> list[dict[str, Any]]:
    """Every state read until ``until`` holds (the last one is the one that made it hold)."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        answer = send(http, "/state", style, token=token, id=execution_id)
        assert answer.status_code == 200, answer.text
        seen.append(answer.json())
        if until(seen[-1]):
            return seen
        assert time.monotonic() < deadline, f"no matching state in {timeout} s: {seen[-1]}"
        time.sleep(0.05)


def remove(http: httpx.Client, token: str, execution_id: str) -> None:
    answer = http.post("/remove", data={"token": token, "id": execution_id})
    assert answer.status_code == 200, answer.text


def check_running_shape(state: dict[str, Any]) -> None:
    """The seed's running state: job counts, per-capsule counts, per-environment counts."""
    assert state["state"] == "running"
    for key in ("ready", "running", "completed"):
        assert isinstance(state[key], int) and state[key] >= 0
    assert isinstance(state["capsules"], list)
    for name, counts in state["capsules"]:
        assert isinstance(name, str)
        assert set(counts) == {"ready", "running", "completed"}
    assert sum(c["completed"] for _, c in state["capsules"]) == state["completed"]
    assert isinstance(state["environments"], list)  # empty before the first job is handed out
    for environment in state["environments"]:
        assert {"submitted", "running", "done", "failed", "errors"} <= set(environment)
        assert all(isinstance(environment[k], int) for k in ("submitted", "running", "done"))
        assert isinstance(environment["errors"], list)


# -- the whole flow ----------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["form", "query", "multipart"])
def test_seed_flow_end_to_end(http: httpx.Client, archive: bytes, style: str) -> None:
    answer = send(http, "/token", style, password=PASSWORD)
    assert answer.status_code == 202
    assert set(answer.json()) == {"token", "duration"}
    assert answer.json()["duration"] == 86_400_000
    token = answer.json()["token"]
    assert isinstance(token, str) and len(token) >= 32

    execution_id = start(http, token, archive, "pi.oms", style)
    states = poll(http, token, execution_id, style=style)
    running, last = states[:-1], states[-1]
    assert running, "the pi workflow finished before its first /state query"
    for state in running:
        check_running_shape(state)
    assert any(name == "model" for s in running for name, _ in s["capsules"])
    assert last["state"] == "finished", last
    assert last["completed"] == 100 and last["ready"] == last["running"] == 0
    [local] = last["environments"]
    assert local["name"] == "local" and local["done"] >= 1 and local["failed"] == 0

    answer = send(http, "/output", style, token=token, id=execution_id)
    assert answer.status_code == 200
    assert set(answer.json()) == {"output"}
    assert "pi_avg" in answer.json()["output"] and "pi_med" in answer.json()["output"]

    # A file: its bytes gzip-compressed; the client gunzips.
    answer = send(http, "/download", style, token=token, id=execution_id, path="result.csv")
    assert answer.status_code == 200
    assert answer.content[:2] == b"\x1f\x8b"
    lines = gzip.decompress(answer.content).decode().splitlines()
    assert lines[0].split(",") == ["pi_avg", "pi_med"]
    assert 3.0 < float(lines[1].split(",")[0]) < 3.3

    answer = send(http, "/download", style, token=token, id=execution_id, path="data/a.txt")
    assert gzip.decompress(answer.content) == b"alpha\n"

    # A folder: a tar.gz named archive.tgz, entries relative to the folder.
    answer = send(http, "/download", style, token=token, id=execution_id, path="data")
    assert answer.status_code == 200
    assert answer.headers["content-disposition"] == "attachment; filename=archive.tgz"
    entries = tar_entries(answer.content)
    assert entries["a.txt"] == b"alpha\n" and entries["sub/b.txt"] == b"beta\n"
    assert not any(n.startswith(("/", "data", "..")) for n in entries)

    # No path: the whole work directory, results included.
    answer = send(http, "/download", style, token=token, id=execution_id)
    entries = tar_entries(answer.content)
    assert {"pi.oms", "result.csv", "data/a.txt", "data/sub/b.txt"} <= set(entries)
    assert entries["pi.oms"] == PI_SCRIPT.encode()

    answer = send(http, "/list", style, token=token)
    assert answer.status_code == 200
    assert {"id": execution_id} in answer.json()
    assert all(set(item) == {"id"} for item in answer.json())

    answer = send(http, "/remove", style, token=token, id=execution_id)
    assert answer.status_code == 200
    assert answer.content == b""
    answer = send(http, "/state", style, token=token, id=execution_id)
    assert answer.status_code == 417 and answer.json() == NOT_FOUND
    answer = send(http, "/list", style, token=token)
    assert {"id": execution_id} not in answer.json()


# -- /token ------------------------------------------------------------------------------------


def test_token_without_password(http: httpx.Client) -> None:
    answer = http.post("/token")
    assert answer.status_code == 417
    assert answer.json() == {"message": "No password sent with request"}
    assert answer.headers["content-type"].startswith("application/json")


def test_token_with_wrong_password(http: httpx.Client) -> None:
    answer = http.post("/token", data={"password": "not " + PASSWORD})
    assert answer.status_code == 403
    assert answer.json() == {"message": "Server password is incorrect"}
    # The right one then works (and forgets the failure, for the session's other tests).
    assert http.post("/token", params={"password": PASSWORD}).status_code == 202


# -- tokens on every route ---------------------------------------------------------------------

ROUTES = ["/start", "/state", "/output", "/download", "/remove", "/list"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("bad", [None, "", "not-a-token", "x" * 43])
def test_every_route_wants_a_valid_token(
    http: httpx.Client, archive: bytes, route: str, bad: str | None
) -> None:
    params = {"id": str(uuid.uuid4()), "script": "pi.oms", "path": "result.csv"}
    if bad is not None:
        params["token"] = bad
    upload = archive if route == "/start" else None
    answer = send(http, route, "form", upload, **params)
    assert answer.status_code == 401, answer.text
    assert answer.json() == NO_TOKEN


def test_a_token_as_bearer_header_works_on_the_token_api(http: httpx.Client, token: str) -> None:
    answer = http.post("/list", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200 and isinstance(answer.json(), list)


# -- /start errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["form", "query", "multipart"])
def test_start_without_script(http: httpx.Client, token: str, archive: bytes, style: str) -> None:
    answer = send(http, "/start", style, archive, token=token)
    assert answer.status_code == 417
    assert answer.json() == {"message": "Missing mandatory script parameter."}


def test_start_without_work_directory(http: httpx.Client, token: str) -> None:
    answer = send(http, "/start", "form", token=token, script="pi.oms")
    assert answer.status_code == 417
    assert "workDirectory" in answer.json()["message"]


def test_start_with_a_script_not_in_the_archive(
    http: httpx.Client, token: str, archive: bytes
) -> None:
    answer = send(http, "/start", "form", archive, token=token, script="model.oms")
    assert answer.status_code == 417
    message = answer.json()["message"]
    assert "model.oms" in message
    for name in ("pi.oms", "failing.oms", "data/a.txt", "data/sub/b.txt"):
        assert name in message, message


@pytest.mark.parametrize("script", ["../pi.oms", "/pi.oms", "s" * 300 + ".oms", "a\x00b.oms"])
def test_start_with_a_script_outside_the_archive(
    http: httpx.Client, token: str, archive: bytes, script: str
) -> None:
    answer = send(http, "/start", "form", archive, token=token, script=script)
    assert answer.status_code == 417
    assert script in answer.json()["message"]


def test_start_a_script_with_a_syntax_error(
    http: httpx.Client, token: str, archive: bytes, mole_server: ServerProcess
) -> None:
    answer = send(http, "/start", "form", archive, token=token, script="broken.oms")
    assert answer.status_code == 417
    body = answer.json()
    assert set(body) == {"message", "stackTrace"}
    assert "broken.oms" in body["message"] and "line 2" in body["message"]
    assert "SyntaxError" in body["stackTrace"]
    # Paths are the script's own, not the server's folders.
    assert str(mole_server.state_dir) not in body["message"] + body["stackTrace"]


def test_start_an_openmole_scala_script(http: httpx.Client, token: str, archive: bytes) -> None:
    answer = send(http, "/start", "multipart", archive, token=token, script="scala.oms")
    assert answer.status_code == 417
    body = answer.json()
    assert "Scala" in body["message"] and "OpenMOLE server" in body["message"]
    assert "line 1" in body["message"]
    assert body["stackTrace"]


def test_a_refused_start_leaves_no_execution(
    http: httpx.Client, token: str, archive: bytes
) -> None:
    before = http.post("/list", data={"token": token}).json()
    for script in ("broken.oms", "scala.oms", "nothing.oms"):
        assert send(http, "/start", "form", archive, token=token, script=script).status_code == 417
    assert http.post("/list", data={"token": token}).json() == before


# -- an upload refused before it is read -------------------------------------------------------

# (headers, query string, status) of requests answered before their body is read.
EARLY = {
    "bad-token": ({"Authorization": "Bearer not-a-token"}, "", 401),
    "token-not-utf8": ({}, "?token=%FF", 400),
}


@pytest.mark.parametrize("route", ["/start", "/job"])
@pytest.mark.parametrize("case", list(EARLY))
def test_an_upload_refused_before_it_is_read_says_the_connection_closes(
    mole_server: ServerProcess, token: str, route: str, case: str
) -> None:
    """Tornado closes the connection after such an answer: a keep-alive client must be told.

    Told nothing, the client pools the connection and, now and then, its next request
    meets the closed socket: "Server disconnected without sending a response".
    """
    headers, query, status = EARLY[case]
    big = {"workDirectory": ("work.tgz", b"\0" * 512 * 1024, "application/gzip")}
    with httpx.Client(base_url=mole_server.url, verify=mole_server.verify, timeout=60) as client:
        for _ in range(5):
            answer = client.post(route + query, headers=headers, data={"script": "x"}, files=big)
            assert answer.status_code == status, answer.text
            assert answer.headers.get("Connection", "").lower() == "close", answer.headers
            answer = client.post("/state", data={"token": token, "id": "no-such-execution"})
            assert answer.status_code == 417 and answer.json() == NOT_FOUND
        # Refused once read (no script), an upload leaves the connection open for the next.
        answer = client.post(route, headers={"Authorization": f"Bearer {token}"}, files=big)
        assert answer.status_code == 417, answer.text
        assert "Connection" not in answer.headers


# -- routes that take an id ----------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/state", "/output", "/download", "/remove"])
def test_id_missing_and_unknown(http: httpx.Client, token: str, route: str) -> None:
    answer = http.post(route, data={"token": token})
    assert answer.status_code == 417 and answer.json() == ID_MISSING
    answer = http.post(route, data={"token": token, "id": ""})
    assert answer.status_code == 417 and answer.json() == ID_MISSING
    answer = http.post(route, data={"token": token, "id": str(uuid.uuid4())})
    assert answer.status_code == 417 and answer.json() == NOT_FOUND
    answer = http.post(route, params={"token": token, "id": "../../etc"})
    assert answer.status_code == 417 and answer.json() == NOT_FOUND


@pytest.fixture(scope="module")
def finished(http: httpx.Client, token: str, archive: bytes) -> Iterator[str]:
    """A finished pi execution, shared by the download tests."""
    execution_id = start(http, token, archive, "pi.oms")
    assert poll(http, token, execution_id)[-1]["state"] == "finished"
    yield execution_id
    remove(http, token, execution_id)


@pytest.mark.parametrize(
    "path",
    ["nothing.txt", "data/nothing", "../index.sqlite", "../../..", "data/../../x", "x" * 300,
     "a\x00b"],
)  # fmt: skip
def test_download_a_path_that_does_not_exist_or_escapes(
    http: httpx.Client, token: str, finished: str, path: str
) -> None:
    answer = http.post("/download", data={"token": token, "id": finished, "path": path})
    assert answer.status_code in (404, 417), answer.status_code
    assert answer.json()["message"]
    assert answer.headers["content-type"].startswith("application/json")


def test_download_an_absolute_path_gets_nothing_outside(
    http: httpx.Client, token: str, finished: str
) -> None:
    for path in ("/etc/passwd", "/etc", "//etc/hostname"):
        answer = http.post("/download", data={"token": token, "id": finished, "path": path})
        assert answer.status_code in (404, 417), (path, answer.status_code)
        assert answer.json()["message"]


def test_download_through_a_link_leading_outside(
    http: httpx.Client, token: str, finished: str, mole_server: ServerProcess
) -> None:
    work = mole_server.state_dir / "executions" / finished / "workDirectory"
    (work / "etc").symlink_to("/etc")
    (work / "up").symlink_to("..")
    try:
        for path in ("etc", "etc/passwd", "up", "up/output.txt"):
            answer = http.post("/download", data={"token": token, "id": finished, "path": path})
            assert answer.status_code in (404, 417), (path, answer.status_code)
            assert "outside" in answer.json()["message"]
        # Nor do the links come along in the whole work directory's archive.
        answer = http.post("/download", data={"token": token, "id": finished})
        names = tar_entries(answer.content)
        assert "pi.oms" in names and not any(n.startswith(("etc/", "up/")) for n in names)
    finally:
        (work / "etc").unlink()
        (work / "up").unlink()


# -- failed and running states -------------------------------------------------------------------


def test_failed_state(http: httpx.Client, token: str, archive: bytes) -> None:
    execution_id = start(http, token, archive, "failing.oms")
    try:
        last = poll(http, token, execution_id)[-1]
        assert last["state"] == "failed"
        assert set(last["error"]) == {"message", "stackTrace"}
        message = last["error"]["message"]
        assert message.startswith("Mole execution failed when executing capsule: fragile")
        assert "no good value here" in message
        assert "ValueError" in last["error"]["stackTrace"]
        # Asked again (now from the record of the ended execution), the same failure.
        again = http.post("/state", data={"token": token, "id": execution_id}).json()
        assert again["state"] == "failed" and again["error"] == last["error"]
        # The output of a failed execution is still there (empty: nothing printed).
        answer = http.post("/output", data={"token": token, "id": execution_id})
        assert answer.status_code == 200 and set(answer.json()) == {"output"}
    finally:
        remove(http, token, execution_id)


def test_environment_errors_in_the_running_state(
    http: httpx.Client, token: str, archive: bytes, mole_server: ServerProcess
) -> None:
    execution_id = start(http, token, archive, "retry.oms")
    work = mole_server.state_dir / "executions" / execution_id / "workDirectory"
    try:

        def has_error(state: dict[str, Any]) -> bool:
            assert state["state"] == "running", state
            return any(e["errors"] for e in state["environments"])

        states = poll(http, token, execution_id, until=has_error)
        for state in states:
            check_running_shape(state)
        errors = [e for env in states[-1]["environments"] for e in env["errors"]]
        assert len(errors) == 1
        assert errors[0]["level"] == "WARNING"
        assert "flaky on its first try" in errors[0]["message"]
        assert "RuntimeError" in errors[0]["stackTrace"]
        assert states[-1]["environments"][0]["failed"] >= 1
        # Since the last query: the next state does not repeat it.
        state = http.post("/state", data={"token": token, "id": execution_id}).json()
        assert all(not env["errors"] for env in state["environments"])
        (work / "release").write_text("go")
        assert poll(http, token, execution_id)[-1]["state"] == "finished"
    finally:
        (work / "release").touch()
        remove(http, token, execution_id)


def test_remove_a_running_execution(
    http: httpx.Client, token: str, archive: bytes, mole_server: ServerProcess
) -> None:
    execution_id = start(http, token, archive, "retry.oms")
    poll(http, token, execution_id, until=lambda s: s["running"] >= 1)
    started = time.monotonic()
    remove(http, token, execution_id)
    assert time.monotonic() - started < 20
    assert not (mole_server.state_dir / "executions" / execution_id).exists()
    answer = http.post("/output", data={"token": token, "id": execution_id})
    assert answer.status_code == 417 and answer.json() == NOT_FOUND


def test_list_is_only_ids(http: httpx.Client, token: str, finished: str) -> None:
    answer = http.post("/list", params={"token": token})
    assert answer.status_code == 200
    assert {"id": finished} in answer.json()
    assert all(list(item) == ["id"] for item in answer.json())


def test_state_dir_holds_each_execution_in_its_own_folder(
    finished: str, mole_server: ServerProcess
) -> None:
    folder: Path = mole_server.state_dir / "executions" / finished
    assert (folder / "workDirectory" / "pi.oms").is_file()
    assert (folder / "workDirectory" / "result.csv").is_file()
