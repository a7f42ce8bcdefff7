"""OpenMOLE's /job API (generation 2) and our extensions, on the wire, with plain ``httpx``.

The routes are OpenMOLE's (``POST /job``, ``GET /job/:id/state``, the work
directory by ``GET`` and ``PROPFIND``, ``DELETE``); ours take the token as a
Bearer header or a ``token`` query parameter. Keys are kebab-case.

The work directory's routes (``GET`` and ``PROPFIND``) are tested in
``test_server_job_files.py``; the fixtures and helpers both use are in
``tests/job_api.py``.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from typing import Any

import httpx
import psutil
import pytest

from tests.job_api import *  # noqa: F403  (the fixtures, used by name)
from tests.job_api import FILES, delete, poll, start, submit
from tests.servers import SLEEPY_SCRIPT, ServerProcess, new_token

pytestmark = pytest.mark.timeout(120)

NOT_FOUND = {"message": "Execution not found"}


# -- plumbing ---------------------------------------------------------------------------------


def sleeps(server: ServerProcess) -> set[int]:
    found = set()
    for child in psutil.Process(server.process.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.name() == "sleep":
                found.add(child.pid)
    return found


def new_sleeps(server: ServerProcess, before: set[int], timeout: float = 60) -> set[int]:
    """The ``sleep`` processes of SLEEPY_SCRIPT started since ``before`` (its job is then on
    a worker for sure), once there is one."""
    deadline = time.monotonic() + timeout
    while not (started := sleeps(server) - before):
        assert time.monotonic() < deadline, "no job of the sleepy script started"
        time.sleep(0.05)
    return started


def assert_gone(pids: set[int], timeout: float = 5) -> None:
    """The processes end (a cancel stops a job's processes for real)."""
    deadline = time.monotonic() + timeout
    while alive := [p for p in pids if psutil.pid_exists(p) and _running(p)]:
        assert time.monotonic() < deadline, f"still running: {alive}"
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- POST /job -------------------------------------------------------------------------------


def test_post_job_then_list(http: httpx.Client, auth: dict[str, str], finished: str) -> None:
    answer = http.get("/job", headers=auth)
    assert answer.status_code == 200
    assert {"id": finished} in answer.json()
    assert all(list(item) == ["id"] for item in answer.json())


def test_post_job_without_work_directory(http: httpx.Client, auth: dict[str, str]) -> None:
    answer = submit(http, auth, None, "pi.oms")
    assert answer.status_code == 417
    assert "workDirectory" in answer.json()["message"]


def test_post_job_without_script(http: httpx.Client, auth: dict[str, str], archive: bytes) -> None:
    answer = submit(http, auth, archive, None)
    assert answer.status_code == 417
    assert answer.json() == {"message": "Missing mandatory script parameter."}


def test_post_job_with_a_script_not_in_the_archive(
    http: httpx.Client, auth: dict[str, str], archive: bytes
) -> None:
    answer = submit(http, auth, archive, "other.oms")
    assert answer.status_code == 417
    message = answer.json()["message"]
    assert "other.oms" in message
    for name in FILES:
        assert name in message


def test_post_job_with_a_script_that_does_not_load(
    http: httpx.Client, auth: dict[str, str], archive: bytes
) -> None:
    answer = submit(http, auth, archive, "broken.oms")
    assert answer.status_code == 417
    body = answer.json()
    assert set(body) == {"message", "stack-trace"}
    assert "broken.oms" in body["message"] and "line 2" in body["message"]
    assert "SyntaxError" in body["stack-trace"]


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", "/state"),
        ("GET", "/output"),
        ("GET", "/workDirectory/x"),
        ("PROPFIND", "/workDirectory/"),
        ("DELETE", ""),
        ("GET", "/errors"),
        ("POST", "/cancel"),
        ("GET", ""),
    ],
)
def test_unknown_execution(
    http: httpx.Client, auth: dict[str, str], method: str, suffix: str
) -> None:
    answer = http.request(method, f"/job/{uuid.uuid4()}{suffix}", headers=auth)
    assert answer.status_code == 404
    assert answer.json() == NOT_FOUND


def test_failed_state_is_kebab_case(
    http: httpx.Client, auth: dict[str, str], archive: bytes
) -> None:
    execution_id = start(http, auth, archive, "failing.oms")
    try:
        state = poll(http, auth, execution_id)
        assert state["state"] == "failed"
        assert set(state["error"]) == {"message", "stack-trace"}
        assert "no good value here" in state["error"]["message"]
        assert "ValueError" in state["error"]["stack-trace"]
        assert "stackTrace" not in json.dumps(state)
        errors = [e for env in state["environments"] for e in env["errors"]]
        assert all("stack-trace" in e for e in errors if "stackTrace" not in e)
        assert (
            http.get(f"/job/{execution_id}/state", headers=auth).json()["error"] == (state["error"])
        )
    finally:
        delete(http, auth, execution_id)


def test_delete(
    http: httpx.Client, auth: dict[str, str], archive: bytes, mole_server: ServerProcess
) -> None:
    before = sleeps(mole_server)
    execution_id = start(http, auth, archive, "sleepy.oms")
    mine = new_sleeps(mole_server, before)
    answer = http.delete(f"/job/{execution_id}", headers=auth)
    assert answer.status_code == 200 and answer.content == b""
    assert not (mole_server.state_dir / "executions" / execution_id).exists()
    assert_gone(mine)
    assert http.get(f"/job/{execution_id}/state", headers=auth).json() == NOT_FOUND
    assert {"id": execution_id} not in http.get("/job", headers=auth).json()
    assert http.delete(f"/job/{execution_id}", headers=auth).status_code == 404


# -- the token ---------------------------------------------------------------------------------


def test_token_as_bearer_or_query(http: httpx.Client, token: str, finished: str) -> None:
    url = f"/job/{finished}/state"
    assert http.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert http.get(url, params={"token": token}).status_code == 200
    answer = http.request("PROPFIND", f"/job/{finished}/workDirectory/", params={"token": token})
    assert answer.status_code == 200
    for headers, params in [
        ({}, {}),
        ({"Authorization": "Bearer nope"}, {}),
        ({"Authorization": f"Basic {token}"}, {}),
        ({}, {"token": "nope"}),
    ]:
        answer = http.get(url, headers=headers, params=params)
        assert answer.status_code == 401
        assert answer.json() == {"message": "This service requires a valid token"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/job"),
        ("POST", "/job"),
        ("GET", "/job/x/state"),
        ("GET", "/job/x/output"),
        ("GET", "/job/x/workDirectory/a"),
        ("PROPFIND", "/job/x/workDirectory/"),
        ("DELETE", "/job/x"),
        ("GET", "/job/x"),
        ("GET", "/job/x/errors"),
        ("POST", "/job/x/cancel"),
    ],
)
def test_every_job_route_wants_a_token(http: httpx.Client, method: str, path: str) -> None:
    answer = http.request(method, path)
    assert answer.status_code == 401
    assert answer.json() == {"message": "This service requires a valid token"}


# -- our extensions ----------------------------------------------------------------------------


def test_service_info_without_token(http: httpx.Client) -> None:
    answer = http.get("/service-info")
    assert answer.status_code == 200
    info = answer.json()
    assert info["name"] == "jupyter-mole" and info["version"]
    assert info["generations"] == ["token", "job"]
    assert info["engine"] == "embedded" and info["auth"] == "token"
    assert {"cancel", "execution-details", "output-offset", "error-log"} <= set(info["features"])


def test_details_with_tags_and_paging(
    http: httpx.Client, auth: dict[str, str], archive: bytes
) -> None:
    ids = [
        start(
            http,
            auth,
            archive,
            "failing.oms",
            params={"tag": [f"n={i}", "notebook=paging.ipynb"]},
        )
        for i in range(3)
    ]
    try:
        for execution_id in ids:
            poll(http, auth, execution_id)
        answer = http.get("/job", headers=auth, params={"details": "1"})
        assert answer.status_code == 200
        total = int(answer.headers["x-total-count"])
        details = answer.json()
        assert total == len(details) >= 3
        mine = [d for d in details if d["id"] in ids]
        assert [d["id"] for d in mine] == ids[::-1], "newest first"
        for i, d in zip(range(2, -1, -1), mine, strict=True):
            assert d["tags"] == {"n": str(i), "notebook": "paging.ipynb"}
            assert d["state"] == "failed" and d["script"] == "failing.oms"
            assert d["submitted"] <= d["started"] <= d["ended"]
            assert "no good value here" in d["error"]
        submitted = [d["submitted"] for d in details]
        assert submitted == sorted(submitted, reverse=True)

        page = http.get("/job", headers=auth, params={"details": "1", "limit": 2, "offset": 1})
        assert page.headers["x-total-count"] == str(total)
        assert [d["id"] for d in page.json()] == [d["id"] for d in details[1:3]]

        one = http.get(f"/job/{ids[0]}", headers=auth).json()
        assert one["id"] == ids[0] and one["tags"]["n"] == "0"
    finally:
        for execution_id in ids:
            delete(http, auth, execution_id)


def test_tags_as_json_field(http: httpx.Client, auth: dict[str, str], archive: bytes) -> None:
    tags = {"notebook": "pi.ipynb", "cell": "3"}
    execution_id = start(
        http, auth, archive, "failing.oms", data={"tags": json.dumps(tags)}
    )  # a text part beside the others
    try:
        assert http.get(f"/job/{execution_id}", headers=auth).json()["tags"] == tags
    finally:
        delete(http, auth, execution_id)
    answer = submit(http, auth, archive, "failing.oms", data={"tags": "[1, 2]"})
    assert answer.status_code in (400, 417) and "tags" in answer.json()["message"]


def test_output_from_an_offset(http: httpx.Client, auth: dict[str, str], archive: bytes) -> None:
    execution_id = start(http, auth, archive, "printer.oms")
    try:
        assert poll(http, auth, execution_id)["state"] == "finished"
        whole = http.get(f"/job/{execution_id}/output", headers=auth)
        data = whole.content
        assert sorted(data.decode().splitlines()) == [f"line {i} é" for i in range(5)]
        assert int(whole.headers["x-next-offset"]) == len(data)

        cut = data.index("é".encode()) + 1  # inside the two bytes of é
        part = http.get(f"/job/{execution_id}/output", headers=auth, params={"limit": cut})
        end = int(part.headers["x-next-offset"])
        assert end < cut and part.content == data[:end]  # never splits a character
        rest = http.get(f"/job/{execution_id}/output", headers=auth, params={"offset": end})
        assert part.content + rest.content == data
        assert int(rest.headers["x-next-offset"]) == len(data)
        beyond = http.get(f"/job/{execution_id}/output", headers=auth, params={"offset": 10**9})
        assert beyond.status_code == 200 and beyond.content == b""
        assert int(beyond.headers["x-next-offset"]) == len(data)
    finally:
        delete(http, auth, execution_id)


def test_cancel_keeps_files(
    http: httpx.Client, auth: dict[str, str], archive: bytes, mole_server: ServerProcess
) -> None:
    before = sleeps(mole_server)
    execution_id = start(http, auth, archive, "sleepy.oms")
    try:
        mine = new_sleeps(mole_server, before)
        started = time.monotonic()
        answer = http.post(f"/job/{execution_id}/cancel", headers=auth)
        assert answer.status_code == 200
        assert answer.json()["state"] == "cancelled"
        assert time.monotonic() - started < 20
        assert_gone(mine)
        state = http.get(f"/job/{execution_id}/state", headers=auth).json()
        assert state["state"] == "cancelled"
        assert state["ready"] == state["running"] == 0
        answer = http.get(f"/job/{execution_id}/workDirectory/sleepy.oms", headers=auth)
        assert answer.status_code == 200 and answer.text == SLEEPY_SCRIPT
        assert {"id": execution_id} in http.get("/job", headers=auth).json()
        # Cancelling what has ended changes nothing.
        again = http.post(f"/job/{execution_id}/cancel", headers=auth)
        assert again.status_code == 200 and again.json()["state"] == "cancelled"
    finally:
        delete(http, auth, execution_id)


def test_error_cursors_are_per_token(
    http: httpx.Client, archive: bytes, mole_server: ServerProcess
) -> None:
    first = {"Authorization": f"Bearer {new_token(http)}"}
    second = {"Authorization": f"Bearer {new_token(http)}"}
    execution_id = start(http, first, archive, "retry.oms")
    work = mole_server.state_dir / "executions" / execution_id / "workDirectory"

    def errors(state: dict[str, Any]) -> list[dict[str, Any]]:
        return [e for env in state["environments"] for e in env["errors"]]

    try:
        seen = poll(http, first, execution_id, until=lambda s: bool(errors(s)))
        assert seen["state"] == "running"
        [warning] = errors(seen)
        assert warning["level"] == "WARNING" and "flaky on its first try" in warning["message"]
        assert "RuntimeError" in warning["stack-trace"]
        # The first token has had it: polling again shows nothing new.
        again = http.get(f"/job/{execution_id}/state", headers=first).json()
        assert again["state"] == "running" and errors(again) == []
        # The second token has not: it sees the same error, once.
        other = http.get(f"/job/{execution_id}/state", headers=second).json()
        assert errors(other) == [warning]
        assert errors(http.get(f"/job/{execution_id}/state", headers=second).json()) == []
        # The token API shares the cursor of the same token.
        answer = http.post("/state", data={"id": execution_id}, headers=second)
        assert all(not env["errors"] for env in answer.json()["environments"])

        (work / "release").write_text("go")
        assert poll(http, first, execution_id)["state"] == "finished"
        # The whole log stays, whoever has read it.
        log = http.get(f"/job/{execution_id}/errors", headers=second).json()
        assert [(e["level"], e["count"]) for e in log] == [("WARNING", 1)]
        assert "flaky on its first try" in log[0]["message"] and log[0]["environment"]
        assert log[0]["stack-trace"] and log[0]["time"] > 0
        # A third token, arriving after the end, still gets the errors once.
        third = {"Authorization": f"Bearer {new_token(http)}"}
        late = http.get(f"/job/{execution_id}/state", headers=third).json()
        assert [e["message"] for e in errors(late)] == [warning["message"]]
    finally:
        (work / "release").touch()
        delete(http, first, execution_id)


def test_errors_of_a_failed_execution_after_its_end(
    http: httpx.Client, archive: bytes, auth: dict[str, str]
) -> None:
    execution_id = start(http, auth, archive, "failing.oms")
    try:
        poll(http, auth, execution_id, until=lambda s: s["state"] == "failed")
        late = {"Authorization": f"Bearer {new_token(http)}"}
        state = http.get(f"/job/{execution_id}/state", headers=late).json()
        [severe] = [e for env in state["environments"] for e in env["errors"]]
        assert severe["level"] == "SEVERE" and "no good value here" in severe["message"]
    finally:
        delete(http, auth, execution_id)


def test_unknown_route(http: httpx.Client, auth: dict[str, str]) -> None:
    answer = http.get("/nothing/here", headers=auth)
    assert answer.status_code == 404
    assert "/nothing/here" in answer.json()["message"]
