"""Executions outlive the server process; tokens do not.

A server stopped and started again on the same state directory answers for
its finished, failed and cancelled executions exactly as before; one that was
running when it stopped reads ``failed``, saying the restart interrupted it,
and its jobs' processes are gone. Tokens are held in memory only, and expire.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.servers import (
    FAILING_SCRIPT,
    PASSWORD,
    PI_SCRIPT,
    SLEEPY_SCRIPT,
    ServerProcess,
    make_archive,
    tar_entries,
)

pytestmark = pytest.mark.timeout(180)

NO_TOKEN = {"message": "This service requires a valid token"}


class Session:
    """A token-holding client of one server process."""

    def __init__(self, server: ServerProcess) -> None:
        self.http = httpx.Client(base_url=server.url, verify=server.verify, timeout=60)
        self.token = self.new_token()

    def new_token(self) -> str:
        answer = self.http.post("/token", data={"password": PASSWORD})
        assert answer.status_code == 202, answer.text
        return answer.json()["token"]

    def post(self, route: str, token: str | None = None, **params: str) -> httpx.Response:
        return self.http.post(route, data={"token": token or self.token, **params})

    def get(self, url: str, token: str | None = None, method: str = "GET") -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return self.http.request(method, url, headers=headers)

    def start(self, archive: Path, script: str) -> str:
        answer = self.http.post(
            "/start",
            data={"token": self.token, "script": script},
            files={"workDirectory": ("w.tgz", archive.read_bytes())},
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["id"]

    def wait(
        self,
        execution_id: str,
        until: Callable[[dict[str, Any]], bool] = lambda s: s["state"] != "running",
        timeout: float = 60,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            state = self.post("/state", id=execution_id).json()
            if until(state):
                return state
            assert time.monotonic() < deadline, state
            time.sleep(0.05)

    def close(self) -> None:
        self.http.close()


def everything(session: Session, execution_id: str) -> dict[str, Any]:
    """All a client can read of an execution, through both generations, with a fresh token."""
    token = session.new_token()  # its error cursor is at the start, as after a restart
    seen: dict[str, Any] = {}
    seen["state"] = session.post("/state", token, id=execution_id).json()
    seen["state again"] = session.post("/state", token, id=execution_id).json()
    seen["output"] = session.post("/output", token, id=execution_id).json()
    answer = session.post("/download", token, id=execution_id)
    assert answer.status_code == 200
    seen["work directory"] = tar_entries(answer.content)
    for path in seen["work directory"]:
        if seen["work directory"][path] is not None:
            answer = session.post("/download", token, id=execution_id, path=path)
            seen[f"file {path}"] = gzip.decompress(answer.content)
    job = f"/job/{execution_id}"
    seen["job state"] = session.get(f"{job}/state", token).json()
    seen["job output"] = session.get(f"{job}/output", token).text
    seen["job details"] = session.get(job, token).json()
    seen["job errors"] = session.get(f"{job}/errors", token).json()
    seen["propfind"] = session.get(f"{job}/workDirectory/", token, "PROPFIND").json()
    seen["job data"] = session.get(f"{job}/workDirectory/data", token).content
    seen["job data"] = tar_entries(seen["job data"])
    return seen


def sleeps_of(server: ServerProcess) -> list[psutil.Process]:
    try:
        children = psutil.Process(server.process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if child.name() == "sleep":
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return make_archive(
        tmp_path / "work",
        {
            "pi.oms": PI_SCRIPT,
            "failing.oms": FAILING_SCRIPT,
            "sleepy.oms": SLEEPY_SCRIPT,
            "data/a.txt": "alpha\n",
        },
    )


@pytest.fixture
def sessions() -> Iterator[list[Session]]:
    opened: list[Session] = []
    yield opened
    for session in opened:
        session.close()


def test_restart_keeps_executions(
    start_server: Callable[..., ServerProcess],
    archive: Path,
    tmp_path: Path,
    sessions: list[Session],
) -> None:
    state_dir = tmp_path / "state"
    server = start_server(state_dir=state_dir)
    session = Session(server)
    sessions.append(session)

    finished = session.start(archive, "pi.oms")
    failed = session.start(archive, "failing.oms")
    assert session.wait(finished)["state"] == "finished"
    assert session.wait(failed)["state"] == "failed"
    cancelled = session.start(archive, "sleepy.oms")
    session.wait(cancelled, until=lambda s: s["running"] >= 1)
    assert session.get(f"/job/{cancelled}/cancel", method="POST").json()["state"] == "cancelled"

    interrupted = session.start(archive, "sleepy.oms")
    session.wait(interrupted, until=lambda s: s["running"] >= 1)
    deadline = time.monotonic() + 30
    while not (sleeps := sleeps_of(server)):
        assert time.monotonic() < deadline, "the sleepy jobs never started their processes"
        time.sleep(0.05)

    ended = [finished, failed, cancelled]
    before = {i: everything(session, i) for i in ended}
    listed = session.post("/list").json()
    details = session.get("/job?details=1").json()
    old_token = session.token

    assert server.stop() == 0, server.output()
    _, alive = psutil.wait_procs(sleeps, timeout=10)
    assert not alive, f"sleep processes outlived the server: {alive}"
    assert "recorded as interrupted" in server.output()

    server = start_server(state_dir=state_dir)
    session = Session(server)
    sessions.append(session)

    # Tokens live in the server's memory only.
    assert session.post("/list", old_token).status_code == 401
    assert session.post("/list", old_token).json() == NO_TOKEN
    assert session.get("/job", old_token).status_code == 401

    after = {i: everything(session, i) for i in ended}
    for execution_id in ended:
        for key, value in before[execution_id].items():
            assert after[execution_id][key] == value, (execution_id, key)
    assert before[finished]["state"]["state"] == "finished"
    assert before[finished]["file result.csv"].splitlines()[0] == b"pi_avg,pi_med"
    assert before[failed]["state"]["error"]["message"].startswith(
        "Mole execution failed when executing capsule: fragile"
    )
    severe = [e for env in before[failed]["state"]["environments"] for e in env["errors"]]
    assert [e["level"] for e in severe] == ["SEVERE"]
    assert before[cancelled]["job state"]["state"] == "cancelled"

    # The interrupted one says so, and keeps its files.
    state = session.post("/state", id=interrupted).json()
    assert state["state"] == "failed"
    assert "interrupted by a restart" in state["error"]["message"]
    assert state["ready"] == state["running"] == 0
    job_state = session.get(f"/job/{interrupted}/state").json()
    assert "interrupted by a restart" in job_state["error"]["message"]
    answer = session.post("/download", id=interrupted, path="sleepy.oms")
    assert gzip.decompress(answer.content) == SLEEPY_SCRIPT.encode()

    assert session.post("/list").json() == listed
    new_details = {d["id"]: d for d in session.get("/job?details=1").json()}
    for old in details:
        new = new_details[old["id"]]
        if old["id"] == interrupted:
            assert old["state"] == "running" and new["state"] == "failed"
            assert new["ended"] >= new["started"]
        else:
            assert new == old

    # The restarted server runs new work in the same registry.
    again = session.start(archive, "pi.oms")
    assert session.wait(again)["state"] == "finished"
    assert session.post("/list").json()[0] == {"id": again}


def test_tokens_expire(start_server: Callable[..., ServerProcess], sessions: list[Session]) -> None:
    server = start_server(https=False, extra=("--token-duration-ms", "1000"))
    session = Session(server)
    sessions.append(session)
    issued = time.monotonic()
    answer = session.http.post("/token", data={"password": PASSWORD})
    assert answer.json()["duration"] == 1000
    token = answer.json()["token"]
    assert session.post("/list", token).status_code == 200
    assert session.get("/job", token).status_code == 200
    time.sleep(max(0.0, issued + 1.2 - time.monotonic()))
    assert session.post("/list", token).json() == NO_TOKEN
    answer = session.get("/job", token)
    assert answer.status_code == 401 and answer.json() == NO_TOKEN
    # A new one works again.
    assert session.post("/list", session.new_token()).status_code == 200


def test_hidden_token_duration_must_be_positive(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "jupyter_mole", "serve", "--no-password", "--http",
         "--state-dir", str(tmp_path), "--token-duration-ms", "0"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "--token-duration-ms" in done.stderr
