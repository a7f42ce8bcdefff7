"""The OpenAPI description (jupyter_mole/server/openapi.json), true to live servers.

Real answers of live servers (the session's HTTPS server with a password, and a private one
for the upload cap and the brake on guessing) for every route and every status of
PROTOCOL.md, each asserted by ``check`` (tests/openapi_description.py) to be one the
description documents. The last test checks that every (operation, status) the description
documents was met at least once, so the live tests all stay in this one file; the document
itself and ``check``'s own tests are in tests/test_openapi_document.py (split off to keep
each file under ~600 lines).
"""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import jupyter_mole
from tests.openapi_description import (
    FILES,
    SEEN,
    SPEC,
    check,
    operations,
    raw_exchange,
    schema_errors,
    start,
    upload,
    wait,
)
from tests.servers import PASSWORD, ServerProcess, make_archive, serve_process

# Statuses no test can bring about on a healthy machine.
UNREACHABLE = {
    ("POST", "/start", "507"): "needs a full disk",
    ("POST", "/job", "507"): "needs a full disk",
}


# -- live servers ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_archive(tmp_path_factory.mktemp("openapi") / "work", FILES).read_bytes()


@pytest.fixture(scope="module")
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def executions(
    http: httpx.Client, auth: dict[str, str], archive: bytes
) -> Iterator[dict[str, str]]:
    """A finished pi estimation and a failed workflow; removed at the end."""
    ids = {
        "pi": start(http, auth, archive, "pi.oms"),
        "fail": start(http, auth, archive, "fail.oms"),
    }
    assert wait(http, auth, ids["pi"]) == "finished"
    assert wait(http, auth, ids["fail"]) == "failed"
    yield ids
    for execution_id in ids.values():
        http.delete(f"/job/{execution_id}", headers=auth)


@pytest.fixture(scope="module")
def private_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, str]]:
    """A server of our own (HTTP, password, a 4 KiB upload cap) and a token bought on it."""
    server = serve_process(
        tmp_path_factory.mktemp("openapi-private"), https=False, extra=("--max-upload", "4096")
    )
    try:
        answer = httpx.post(f"{server.url}/token", data={"password": PASSWORD})
        yield server, check(answer, "/token")["token"]
    finally:
        server.stop()


# -- generation 1: the token API ---------------------------------------------------------
def test_token(http: httpx.Client) -> None:
    by_form = check(http.post("/token", data={"password": PASSWORD}), "/token")
    by_query = check(http.post("/token", params={"password": PASSWORD}), "/token")
    assert by_form["duration"] == by_query["duration"] == 86_400_000
    assert by_form["token"] != by_query["token"]
    answer = http.post("/token", files={"password": (None, PASSWORD)})  # multipart
    assert answer.status_code == 202
    check(answer, "/token")
    answer = http.post("/token")
    assert answer.status_code == 417
    assert check(answer, "/token") == {"message": "No password sent with request"}


def test_token_wrong_password_is_403(private_server: tuple[ServerProcess, str]) -> None:
    server, _ = private_server
    answer = httpx.post(f"{server.url}/token", data={"password": "not it"})
    assert answer.status_code == 403
    assert check(answer, "/token") == {"message": "Server password is incorrect"}


def test_start(http: httpx.Client, token: str, archive: bytes) -> None:
    # the token as a form field, the script in the query string: both allowed
    answer = http.post(
        "/start", params={"script": "pi.oms"}, data={"token": token}, files=upload(archive)
    )
    assert answer.status_code == 200
    execution_id = check(answer, "/start")["id"]
    answer = http.post("/remove", params={"token": token, "id": execution_id})
    assert answer.status_code == 200
    check(answer, "/remove")


@pytest.mark.parametrize(
    ("form", "with_file", "expected"),
    [
        ({}, True, "Missing mandatory script parameter."),
        ({"script": "nope.oms"}, True, "data/notes.txt"),  # lists what the archive holds
        ({"script": "bad.oms"}, True, "syntax"),
        ({"script": "nowf.oms"}, True, "workflow"),
        ({"script": "pi.oms"}, False, "workDirectory"),
    ],
    ids=["no-script", "not-in-archive", "syntax-error", "not-a-workflow", "no-archive"],
)
def test_start_refused_is_417(
    http: httpx.Client, token: str, archive: bytes, form: dict, with_file: bool, expected: str
) -> None:
    files = upload(archive) if with_file else None
    answer = http.post("/start", data={"token": token, **form}, files=files)
    assert answer.status_code == 417, answer.text
    assert expected in check(answer, "/start")["message"]
    answer = http.post("/job", headers={"Authorization": f"Bearer {token}"}, data=form, files=files)
    assert answer.status_code == 417, answer.text
    assert expected in check(answer, "/job")["message"]


def test_start_bad_body_is_400(
    mole_server: ServerProcess, auth: dict[str, str], archive: bytes
) -> None:
    headers = {**auth, "Content-Type": "multipart/form-data"}  # no boundary
    for route in ("/start", "/job"):
        # A connection of its own: a refused upload must not disturb the others' (see
        # test_a_refused_upload_leaves_the_connection_usable_or_says_it_closes).
        with httpx.Client(base_url=mole_server.url, verify=mole_server.verify) as fresh:
            answer = fresh.post(route, headers=headers, content=b"--x\r\n")
        assert answer.status_code == 400, answer.text
        assert "boundary" in check(answer, route)["message"]
    with httpx.Client(base_url=mole_server.url, verify=mole_server.verify) as fresh:
        answer = fresh.post(
            "/job", headers=auth, data={"script": "pi.oms", "tags": "[1]"}, files=upload(archive)
        )
    assert answer.status_code == 400
    assert "tags" in check(answer, "/job")["message"]


def test_state(http: httpx.Client, auth: dict[str, str], executions: dict[str, str]) -> None:
    finished = check(http.post("/state", headers=auth, data={"id": executions["pi"]}), "/state")
    assert finished["state"] == "finished" and finished["completed"] == 100
    assert finished["capsules"] == [["model", {"ready": 0, "running": 0, "completed": 100}]]
    for _ in range(2):  # the same on every read
        failed = check(
            http.post("/state", headers=auth, params={"id": executions["fail"], "reader": "r"}),
            "/state",
        )
        assert failed["state"] == "failed"
        assert failed["error"]["message"].startswith(
            "Mole execution failed when executing capsule: fragile"
        )
        assert "no good value here" in failed["error"]["stackTrace"]


@pytest.mark.parametrize("route", ["/state", "/output", "/download", "/remove"])
def test_unknown_or_missing_id_is_417(http: httpx.Client, auth: dict[str, str], route: str) -> None:
    answer = http.post(route, headers=auth)
    assert answer.status_code == 417
    assert check(answer, route) == {"message": "id is missing"}
    answer = http.post(route, headers=auth, data={"id": "no-such-execution"})
    assert answer.status_code == 417
    assert check(answer, route) == {"message": "Execution not found"}


def test_output(http: httpx.Client, auth: dict[str, str], executions: dict[str, str]) -> None:
    answer = http.post("/output", headers=auth, data={"id": executions["pi"]})
    whole = check(answer, "/output")["output"]
    assert "pi_avg" in whole
    assert int(answer.headers["X-Next-Offset"]) == len(whole.encode())
    answer = http.post(
        "/output", headers=auth, data={"id": executions["pi"], "offset": "3", "limit": "5"}
    )
    assert check(answer, "/output")["output"] == whole[3:8]
    assert answer.headers["X-Next-Offset"] == "8"
    answer = http.post("/output", headers=auth, data={"id": executions["pi"], "offset": "-1"})
    assert answer.status_code == 400
    assert "offset" in check(answer, "/output")["message"]


def test_download(http: httpx.Client, auth: dict[str, str], executions: dict[str, str]) -> None:
    pi = executions["pi"]
    raw = http.get(f"/job/{pi}/workDirectory/result.csv", headers=auth).content
    answer = http.post("/download", headers=auth, data={"id": pi, "path": "result.csv"})
    assert answer.status_code == 200
    assert gzip.decompress(check(answer, "/download")) == raw  # a file comes gzip-compressed
    for path in ("", "data"):
        answer = http.post("/download", headers=auth, data={"id": pi, "path": path})
        assert answer.headers["Content-Disposition"] == "attachment; filename=archive.tgz"
        with tarfile.open(fileobj=io.BytesIO(check(answer, "/download")), mode="r:gz") as tar:
            names = {n.removeprefix("./") for n in tar.getnames()}
        assert ("notes.txt" if path else "data/notes.txt") in names
    for path in ("nope.txt", "../../etc/passwd", "/etc/passwd"):
        answer = http.post("/download", headers=auth, data={"id": pi, "path": path})
        assert answer.status_code == 404, path
        check(answer, "/download")


def test_list(http: httpx.Client, auth: dict[str, str], executions: dict[str, str]) -> None:
    ids = [e["id"] for e in check(http.post("/list", headers=auth), "/list")]
    assert set(executions.values()) <= set(ids)
    assert ids == [e["id"] for e in check(http.get("/job", headers=auth), "/job")]


# -- generation 2: the /job API ----------------------------------------------------------
def test_job_details_are_paged(
    http: httpx.Client, auth: dict[str, str], executions: dict[str, str]
) -> None:
    answer = http.get("/job", headers=auth, params={"details": "1"})
    every = check(answer, "/job")
    assert len(every) == int(answer.headers["X-Total-Count"]) >= 2
    assert [e["submitted"] for e in every] == sorted((e["submitted"] for e in every), reverse=True)
    answer = http.get("/job", headers=auth, params={"details": "1", "offset": "1", "limit": "1"})
    assert check(answer, "/job") == every[1:2]
    assert answer.headers["X-Total-Count"] == str(len(every))
    info = {e["id"]: e for e in every}[executions["fail"]]
    assert info["state"] == "failed" and info["script"] == "fail.oms" and "error" in info
    answer = http.get("/job", headers=auth, params={"details": "1", "limit": "ten"})
    assert answer.status_code == 400
    assert "limit" in check(answer, "/job")["message"]


def test_job_info_state_output_and_errors(
    http: httpx.Client, auth: dict[str, str], executions: dict[str, str]
) -> None:
    pi, fail = executions["pi"], executions["fail"]
    info = check(http.get(f"/job/{pi}", headers=auth), "/job/{id}")
    assert info["id"] == pi and info["state"] == "finished" and info["completed"] == 100
    assert info["submitted"] <= info["started"] <= info["ended"]
    state = check(http.get(f"/job/{fail}/state", headers=auth), "/job/{id}/state")
    assert state["state"] == "failed" and "no good value here" in state["error"]["stack-trace"]
    answer = http.get(f"/job/{pi}/output", headers=auth)
    text = check(answer, "/job/{id}/output")
    assert "pi_avg" in text and int(answer.headers["X-Next-Offset"]) == len(text.encode())
    answer = http.get(f"/job/{pi}/output", headers=auth, params={"offset": "4"})
    assert check(answer, "/job/{id}/output") == text[4:]
    answer = http.get(f"/job/{pi}/output", headers=auth, params={"limit": "x"})
    assert answer.status_code == 400
    check(answer, "/job/{id}/output")
    assert check(http.get(f"/job/{pi}/errors", headers=auth), "/job/{id}/errors") == []
    errors = check(http.get(f"/job/{fail}/errors", headers=auth), "/job/{id}/errors")
    assert errors and errors[0]["level"] == "SEVERE" and "no good value" in errors[0]["message"]


@pytest.mark.parametrize(
    ("method", "template"),
    [
        ("GET", "/job/{id}"),
        ("DELETE", "/job/{id}"),
        ("GET", "/job/{id}/state"),
        ("GET", "/job/{id}/output"),
        ("GET", "/job/{id}/errors"),
        ("POST", "/job/{id}/cancel"),
        ("GET", "/job/{id}/workDirectory"),
        ("GET", "/job/{id}/workDirectory/{path}"),
        ("PROPFIND", "/job/{id}/workDirectory"),
        ("PROPFIND", "/job/{id}/workDirectory/{path}"),
    ],
)
def test_unknown_execution_is_404(
    http: httpx.Client, auth: dict[str, str], method: str, template: str
) -> None:
    url = template.replace("{id}", "no-such-execution").replace("{path}", "result.csv")
    answer = http.request(method, url, headers=auth)
    assert answer.status_code == 404
    assert check(answer, template) == {"message": "Execution not found"}


def test_work_directory(
    http: httpx.Client, auth: dict[str, str], executions: dict[str, str]
) -> None:
    pi = executions["pi"]
    answer = http.get(f"/job/{pi}/workDirectory/data/notes.txt", headers=auth)
    assert check(answer, "/job/{id}/workDirectory/{path}") == FILES["data/notes.txt"].encode()
    assert answer.headers["Content-Disposition"] == 'attachment; filename="notes.txt"'
    answer = http.get(f"/job/{pi}/workDirectory/data", headers=auth)
    with tarfile.open(fileobj=io.BytesIO(check(answer, "/job/{id}/workDirectory/{path}"))) as tar:
        assert {n.removeprefix("./") for n in tar.getnames()} >= {"notes.txt"}  # relative to it
    for url in (f"/job/{pi}/workDirectory", f"/job/{pi}/workDirectory/"):
        answer = http.get(url, headers=auth)
        assert 'filename="workDirectory.tgz"' in answer.headers["Content-Disposition"]
        with tarfile.open(fileobj=io.BytesIO(check(answer, "/job/{id}/workDirectory"))) as tar:
            names = {n.removeprefix("./") for n in tar.getnames()}
        assert {"pi.oms", "result.csv", "data/notes.txt"} <= names
    for path in ("nope.txt", "..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/etc/passwd"):
        answer = http.get(f"/job/{pi}/workDirectory/{path}", headers=auth)
        assert answer.status_code == 404, path
        check(answer, "/job/{id}/workDirectory/{path}")


def test_propfind(http: httpx.Client, auth: dict[str, str], executions: dict[str, str]) -> None:
    pi = executions["pi"]
    folder = check(
        http.request("PROPFIND", f"/job/{pi}/workDirectory/", headers=auth),
        "/job/{id}/workDirectory",
    )
    assert folder["type"] == "directory"
    names = [e["name"] for e in folder["entries"]]
    assert {"pi.oms", "result.csv", "data"} <= set(names)
    modified = [e["modified"] for e in folder["entries"]]
    assert modified == sorted(modified, reverse=True)  # newest first
    last = check(
        http.request("PROPFIND", f"/job/{pi}/workDirectory", headers=auth, params={"last": "1"}),
        "/job/{id}/workDirectory",
    )
    assert last["entries"] == folder["entries"][:1]
    data = check(
        http.request("PROPFIND", f"/job/{pi}/workDirectory/data", headers=auth),
        "/job/{id}/workDirectory/{path}",
    )
    assert [(e["name"], e["type"]) for e in data["entries"]] == [("notes.txt", "file")]
    notes = check(
        http.request("PROPFIND", f"/job/{pi}/workDirectory/data/notes.txt", headers=auth),
        "/job/{id}/workDirectory/{path}",
    )
    assert notes["type"] == "file" and notes["size"] == len(FILES["data/notes.txt"])
    answer = http.request("PROPFIND", f"/job/{pi}/workDirectory/nope", headers=auth)
    assert answer.status_code == 404
    assert check(answer, "/job/{id}/workDirectory/{path}") == {"message": "File not found"}
    answer = http.request(
        "PROPFIND", f"/job/{pi}/workDirectory", headers=auth, params={"last": "x"}
    )
    assert answer.status_code == 400
    check(answer, "/job/{id}/workDirectory")


def test_tags_cancel_and_delete(http: httpx.Client, auth: dict[str, str], archive: bytes) -> None:
    answer = http.post(
        "/job",
        headers=auth,
        params={"tag": ["origin=test"]},
        data={"script": "sleepy.oms", "tags": json.dumps({"notebook": "pi.ipynb"})},
        files=upload(archive),
    )
    sleepy = check(answer, "/job")["id"]
    try:
        info = check(http.get(f"/job/{sleepy}", headers=auth), "/job/{id}")
        assert info["tags"] == {"notebook": "pi.ipynb", "origin": "test"}
        running = check(http.get(f"/job/{sleepy}/state", headers=auth), "/job/{id}/state")
        assert running["state"] == "running"
        check(http.post("/state", headers=auth, data={"id": sleepy}), "/state")
        cancelled = check(http.post(f"/job/{sleepy}/cancel", headers=auth), "/job/{id}/cancel")
        assert cancelled["state"] == "cancelled" and cancelled["id"] == sleepy
        state = check(http.get(f"/job/{sleepy}/state", headers=auth), "/job/{id}/state")
        assert state["state"] == "cancelled"
        # its files and logs stay
        listing = http.request("PROPFIND", f"/job/{sleepy}/workDirectory", headers=auth)
        assert "sleepy.oms" in [
            e["name"] for e in check(listing, "/job/{id}/workDirectory")["entries"]
        ]
        check(http.get(f"/job/{sleepy}/output", headers=auth), "/job/{id}/output")
    finally:
        answer = http.delete(f"/job/{sleepy}", headers=auth)
    assert answer.status_code == 200
    check(answer, "/job/{id}")
    assert http.get(f"/job/{sleepy}", headers=auth).status_code == 404


def test_remove_a_running_execution(http: httpx.Client, token: str, archive: bytes) -> None:
    answer = http.post(
        "/start", data={"token": token, "script": "sleepy.oms"}, files=upload(archive)
    )
    sleepy = check(answer, "/start")["id"]
    answer = http.post("/remove", data={"token": token, "id": sleepy})
    assert answer.status_code == 200
    check(answer, "/remove")
    answer = http.post("/state", data={"token": token, "id": sleepy})
    assert answer.status_code == 417


# -- names the file system refuses (found by fuzzing: they answered 500 once) -----------
LONG = "a" * 300  # longer than a file name may be (NAME_MAX, 255 bytes)


@pytest.mark.parametrize(
    ("method", "url", "data", "template"),
    [
        ("POST", "/download", {"path": LONG}, "/download"),
        ("GET", f"/job/{{pi}}/workDirectory/{LONG}", None, "/job/{id}/workDirectory/{path}"),
        ("PROPFIND", f"/job/{{pi}}/workDirectory/{LONG}", None, "/job/{id}/workDirectory/{path}"),
        ("GET", "/job/{pi}/workDirectory/a%00b", None, "/job/{id}/workDirectory/{path}"),
        ("PROPFIND", "/job/{pi}/workDirectory/a%00b", None, "/job/{id}/workDirectory/{path}"),
        ("POST", "/download", {"path": "a\0b"}, "/download"),
    ],
    ids=["download-long", "get-long", "propfind-long", "get-nul", "propfind-nul", "download-nul"],
)
def test_a_path_the_file_system_refuses_is_404(
    http: httpx.Client,
    auth: dict[str, str],
    executions: dict[str, str],
    method: str,
    url: str,
    data: dict[str, str] | None,
    template: str,
) -> None:
    pi = executions["pi"]
    form = {"id": pi, **data} if data else None
    answer = http.request(method, url.replace("{pi}", pi), headers=auth, data=form)
    assert answer.status_code == 404, answer.text
    check(answer, template)


@pytest.mark.parametrize("route", ["/start", "/job"])
def test_a_script_name_the_file_system_refuses_is_417(
    http: httpx.Client, auth: dict[str, str], archive: bytes, route: str
) -> None:
    for script in (LONG + ".oms", "a\0b.oms"):
        answer = http.post(route, headers=auth, data={"script": script}, files=upload(archive))
        assert answer.status_code == 417, answer.text
        assert "not in the workDirectory archive" in check(answer, route)["message"]


# -- every route: tokens, malformed requests, the extensions ------------------------------
SECURED = [(m, t) for m, t, op in operations() if op.get("security") != []]


def example_request(method: str, template: str, archive: bytes) -> dict[str, Any]:
    url = template.replace("{id}", "no-such-execution").replace("{path}", "result.csv")
    kwargs: dict[str, Any] = {"method": method, "url": url}
    if template in ("/start", "/job") and method == "POST":
        kwargs.update(data={"script": "pi.oms"}, files=upload(archive))
    return kwargs


@pytest.mark.parametrize(("method", "template"), SECURED, ids=[f"{m} {t}" for m, t in SECURED])
def test_no_token_is_401(http: httpx.Client, archive: bytes, method: str, template: str) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        answer = http.request(**example_request(method, template, archive), headers=headers)
        assert answer.status_code == 401, answer.text
        assert check(answer, template) == {"message": "This service requires a valid token"}


def test_a_token_in_the_query_string_works_on_the_job_api(
    http: httpx.Client, token: str, executions: dict[str, str]
) -> None:
    answer = http.get(f"/job/{executions['pi']}/state", params={"token": token})
    assert check(answer, "/job/{id}/state")["state"] == "finished"


NOT_UTF8 = [(m, t) for m, t, op in operations() if "400" in op["responses"]]


@pytest.mark.parametrize(("method", "template"), NOT_UTF8, ids=[f"{m} {t}" for m, t in NOT_UTF8])
def test_a_parameter_that_is_not_utf8_is_400(
    http: httpx.Client, auth: dict[str, str], archive: bytes, method: str, template: str
) -> None:
    request = example_request(method, template, archive)
    name = "password" if template == "/token" else "token"
    request["url"] += f"?{name}=%FF"
    answer = http.request(**request, headers=auth)
    assert answer.status_code == 400, answer.text
    assert "unicode" in check(answer, template)["message"].lower()


def test_service_info_and_this_document_need_no_token(
    http: httpx.Client, mole_server: ServerProcess
) -> None:
    info = check(http.get("/service-info"), "/service-info")
    assert info["name"] == "jupyter-mole" and info["version"] == jupyter_mole.__version__
    assert info["generations"] == ["token", "job"] and info["auth"] == "token"
    assert check(http.get("/openapi.json"), "/openapi.json") == SPEC


def test_every_error_is_json_even_off_the_description(http: httpx.Client) -> None:
    for method, url, status in (
        ("GET", "/nowhere", 404),
        ("GET", "/token", 405),
        ("PUT", "/job", 405),
    ):
        answer = http.request(method, url)
        assert answer.status_code == status
        assert answer.headers["Content-Type"].startswith("application/json"), url
        assert not schema_errors("Error", answer.json()), answer.text


# -- a private server: the upload cap and the brake on guessing ---------------------------
def test_an_upload_over_the_cap_is_413(private_server: tuple[ServerProcess, str]) -> None:
    server, token = private_server
    big = {"workDirectory": ("work.tgz", b"\0" * 10_000, "application/gzip")}
    for route in ("/start", "/job"):
        # A connection of its own, as above.
        with httpx.Client(base_url=server.url, timeout=60) as fresh:
            answer = fresh.post(
                route, headers={"Authorization": f"Bearer {token}"}, data={"script": "x"}, files=big
            )
        assert answer.status_code == 413, answer.text
        assert "4096" in check(answer, route)["message"]


UPLOAD = b"--x\r\n" + b"\0" * 10_000


@pytest.mark.parametrize(
    ("status", "request_bytes"),
    [
        pytest.param(
            400,
            b"POST /job HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data\r\n"
            b"Content-Length: 5\r\n\r\n--x\r\n",
            id="400-no-boundary",
        ),
        pytest.param(
            413,
            b"POST /start HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; "
            b"boundary=x\r\nContent-Length: %d\r\n\r\n" % len(UPLOAD) + UPLOAD,
            id="413-over-the-cap",
        ),
        pytest.param(
            413,
            b"POST /start HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; "
            b"boundary=x\r\nContent-Length: 10000000000\r\n\r\n",
            id="413-far-over-the-cap",  # answered at once: the server must say it closes
        ),
    ],
)
def test_a_refused_upload_leaves_the_connection_usable_or_says_it_closes(
    private_server: tuple[ServerProcess, str], status: int, request_bytes: bytes
) -> None:
    """HTTP/1.1 (RFC 9112, 9.6): a server that closes a connection after an answer says so."""
    server, _ = private_server
    head, then = raw_exchange(server.url, request_bytes)
    assert head.startswith(f"HTTP/1.1 {status} "), head
    says_close = re.search(r"(?im)^connection:\s*close\s*$", head) is not None
    assert says_close or then.startswith("HTTP/1.1 200"), (
        f"answered {head.splitlines()[0]!r} without Connection: close, then: {then}"
    )


def test_repeated_wrong_passwords_are_429(private_server: tuple[ServerProcess, str]) -> None:
    server, _ = private_server
    with httpx.Client(base_url=server.url, timeout=60) as client:
        statuses = []
        for _ in range(10):
            answer = client.post("/token", data={"password": "guess"})
            statuses.append(answer.status_code)
            check(answer, "/token")
            if answer.status_code == 429:
                break
        assert statuses[0] == 403 and statuses[-1] == 429, statuses
        assert int(answer.headers["Retry-After"]) >= 1
        # while blocked, even the right password is refused
        answer = client.post("/token", data={"password": PASSWORD})
        assert answer.status_code == 429
        check(answer, "/token")


# -- last: every documented answer was met --------------------------------------------------
def test_every_documented_answer_was_met(request: pytest.FixtureRequest) -> None:
    """Each (operation, status) of the description was produced by the live tests above."""
    here = [i for i in request.session.items if i.module is request.module]
    defined = [n for n, f in globals().items() if n.startswith("test_") and callable(f)]
    if {i.originalname for i in here} != set(defined):
        pytest.skip("only meaningful when the whole file runs")
    documented = {
        (method, template, status)
        for method, template, op in operations()
        for status in op["responses"]
    }
    missing = documented - SEEN - set(UNREACHABLE)
    assert not missing, f"documented but never produced by a live server: {sorted(missing)}"
