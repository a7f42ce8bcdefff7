"""Fixtures and helpers for the /job API tests, shared by ``test_server_job_api.py`` and
``test_server_job_files.py``.

Not a plugin: each module takes the fixtures by ``from tests.job_api import *`` (so
that they stay module-local, as when they were defined in the module, and a test's
parameter named like a fixture does not shadow an import). The module-scoped ones
(``auth``, ``archive``, ``finished``) are set up once per module that uses them;
``http`` and ``token`` come from ``tests.servers``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.servers import (
    FAILING_SCRIPT,
    PI_SCRIPT,
    RETRY_SCRIPT,
    SLEEPY_SCRIPT,
    make_archive,
)

__all__ = ["archive", "auth", "finished"]


PRINTER_SCRIPT = """
x = Val(int)

@PythonTask(inputs=[x])
def talk(x):
    print(f"line {x} é")

DirectSampling(evaluation=talk.on(LocalEnvironment(1)).by(1), sampling=x.in_(list(range(5))))
"""

FILES = {
    "pi.oms": PI_SCRIPT,
    "failing.oms": FAILING_SCRIPT,
    "sleepy.oms": SLEEPY_SCRIPT,
    "retry.oms": RETRY_SCRIPT,
    "printer.oms": PRINTER_SCRIPT,
    "broken.oms": "x = Val(int)\nx +\n",
    "data/a.txt": "alpha\n",
    "data/sub/b.txt": "beta\n",
}


# -- plumbing ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_archive(tmp_path_factory.mktemp("job-api") / "work", FILES).read_bytes()


def submit(
    http: httpx.Client,
    auth: dict[str, str],
    archive: bytes | None,
    script: str | None,
    **extra: Any,
) -> httpx.Response:
    files: dict[str, Any] = {}
    if script is not None:
        files["script"] = (None, script)
    if archive is not None:
        files["workDirectory"] = ("workDirectory.tgz", archive, "application/gzip")
    return http.post("/job", headers=auth, files=files, **extra)


def start(http: httpx.Client, auth: dict[str, str], archive: bytes, script: str, **kw: Any) -> str:
    answer = submit(http, auth, archive, script, **kw)
    assert answer.status_code == 200, answer.text
    assert list(answer.json()) == ["id"]
    uuid.UUID(answer.json()["id"])
    return answer.json()["id"]


def poll(
    http: httpx.Client,
    auth: dict[str, str],
    execution_id: str,
    until: Callable[[dict[str, Any]], bool] = lambda s: s["state"] != "running",
    timeout: float = 60,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = http.get(f"/job/{execution_id}/state", headers=auth)
        assert answer.status_code == 200, answer.text
        state = answer.json()
        if until(state):
            return state
        assert time.monotonic() < deadline, f"no matching state in {timeout} s: {state}"
        time.sleep(0.05)


def delete(http: httpx.Client, auth: dict[str, str], execution_id: str) -> None:
    answer = http.delete(f"/job/{execution_id}", headers=auth)
    assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def finished(http: httpx.Client, auth: dict[str, str], archive: bytes) -> Iterator[str]:
    execution_id = start(http, auth, archive, "pi.oms")
    assert poll(http, auth, execution_id)["state"] == "finished"
    yield execution_id
    delete(http, auth, execution_id)
