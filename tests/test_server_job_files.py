"""OpenMOLE's /job API: an execution's work directory by ``GET`` (files, folders as tar.gz) and
``PROPFIND``, and paths that are not there.

Split out of ``test_server_job_api.py`` to keep each module under 600 lines;
the fixtures are in ``tests/job_api.py`` (so this module sets up its own
module-scoped ``http`` client, token and ``finished`` execution).
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.job_api import *  # noqa: F403  (the fixtures, used by name)
from tests.servers import PI_SCRIPT, tar_entries

pytestmark = pytest.mark.timeout(120)

FILE_NOT_FOUND = {"message": "File not found"}


def filename(answer: httpx.Response) -> str:
    """The file name of ``Content-Disposition: attachment; filename=...`` (quoted or not)."""
    kind, _, rest = answer.headers["content-disposition"].partition(";")
    assert kind.strip() == "attachment"
    key, _, value = rest.strip().partition("=")
    assert key == "filename"
    return value.strip('"')


# -- reading an execution ------------------------------------------------------------------------


def test_state_output_and_files(http: httpx.Client, auth: dict[str, str], finished: str) -> None:
    state = http.get(f"/job/{finished}/state", headers=auth).json()
    assert state["state"] == "finished" and state["completed"] == 100

    answer = http.get(f"/job/{finished}/output", headers=auth)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert "pi_avg" in answer.text

    # A file: raw bytes, named.
    answer = http.get(f"/job/{finished}/workDirectory/data/a.txt", headers=auth)
    assert answer.status_code == 200
    assert answer.content == b"alpha\n"
    assert filename(answer) == "a.txt"
    answer = http.get(f"/job/{finished}/workDirectory/result.csv", headers=auth)
    assert answer.text.splitlines()[0] == "pi_avg,pi_med"
    assert filename(answer) == "result.csv"

    # A folder: a tar.gz named after it, entries relative to it.
    answer = http.get(f"/job/{finished}/workDirectory/data", headers=auth)
    assert answer.status_code == 200
    assert filename(answer) == "data.tgz"
    entries = tar_entries(answer.content)
    assert entries["a.txt"] == b"alpha\n" and entries["sub/b.txt"] == b"beta\n"
    assert not any(n.startswith(("/", "data/", "..")) for n in entries)

    # The empty path: the whole work directory.
    for url in (f"/job/{finished}/workDirectory/", f"/job/{finished}/workDirectory"):
        answer = http.get(url, headers=auth)
        assert answer.status_code == 200, url
        assert filename(answer).endswith(".tgz")
        entries = tar_entries(answer.content)
        assert {"pi.oms", "result.csv", "data/a.txt", "data/sub/b.txt"} <= set(entries)


def test_propfind(http: httpx.Client, auth: dict[str, str], finished: str) -> None:
    answer = http.request("PROPFIND", f"/job/{finished}/workDirectory/pi.oms", headers=auth)
    assert answer.status_code == 200
    info = answer.json()
    assert info["type"] == "file" and info["size"] == len(PI_SCRIPT.encode())
    assert abs(info["modified"] / 1000 - time.time()) < 3600  # milliseconds since the epoch
    assert set(info) == {"size", "modified", "type"}

    answer = http.request("PROPFIND", f"/job/{finished}/workDirectory/", headers=auth)
    listing = answer.json()
    assert listing["type"] == "directory" and isinstance(listing["modified"], int)
    entries = listing["entries"]
    assert {e["name"] for e in entries} >= {"pi.oms", "result.csv", "data", "failing.oms"}
    modified = [e["modified"] for e in entries]
    assert modified == sorted(modified, reverse=True), "newest first"
    assert entries[0]["name"] == "result.csv"  # written by the run, after the upload
    by_name = {e["name"]: e for e in entries}
    assert by_name["data"]["type"] == "directory" and "size" not in by_name["data"]
    assert by_name["pi.oms"] == {
        "name": "pi.oms",
        "size": len(PI_SCRIPT.encode()),
        "modified": by_name["pi.oms"]["modified"],
        "type": "file",
    }

    answer = http.request(
        "PROPFIND", f"/job/{finished}/workDirectory/data", headers=auth, params={"last": 1}
    )
    assert len(answer.json()["entries"]) == 1
    answer = http.request(
        "PROPFIND", f"/job/{finished}/workDirectory", headers=auth, params={"last": 2}
    )
    assert [e["name"] for e in answer.json()["entries"]] == [e["name"] for e in entries[:2]]


@pytest.mark.parametrize(
    "path",
    ["nothing", "data/nothing", "..%2Findex.sqlite", "%2E%2E/%2E%2E", "/etc/passwd", "a" * 300,
     "a%00b", "data/" + "b" * 300 + "/c"],
)  # fmt: skip
def test_files_not_found(
    http: httpx.Client, auth: dict[str, str], finished: str, path: str
) -> None:
    for method in ("GET", "PROPFIND"):
        answer = http.request(method, f"/job/{finished}/workDirectory/{path}", headers=auth)
        assert answer.status_code == 404, (method, path, answer.status_code)
        assert answer.json()["message"]
    answer = http.get(f"/job/{finished}/workDirectory/nothing", headers=auth)
    assert answer.json() == FILE_NOT_FOUND
