"""The client commands end to end: ``jupyter-mole submit/state/output/...`` as subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jupyter_mole.client import MoleClient
from tests.servers import FAILING_SCRIPT, PASSWORD, PI_SCRIPT, SLEEPY_SCRIPT, ServerProcess


def environment(server: ServerProcess | None, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLE_")}
    if server is not None:
        secret = tmp_path / "password.txt"
        secret.write_text(PASSWORD + "\n")
        env.update(
            MOLE_URL=server.url,
            MOLE_PASSWORD_FILE=str(secret),
            MOLE_FINGERPRINT=server.fingerprint or "",
        )
    return env


def mole(
    *args: str | Path, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jupyter_mole", *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "pi.oms").write_text(PI_SCRIPT)
    (project / "fail.oms").write_text(FAILING_SCRIPT)
    (project / "sleepy.oms").write_text(SLEEPY_SCRIPT)
    (project / "bad.oms").write_text("x = Val(int)\ny = = 3\n")
    (project / "data" / "input.txt").write_text("some input\n")
    return project


def remove_started(server: ServerProcess, stderr: str) -> None:
    """Remove the execution a ``submit --wait`` announced ("execution ID started on URL")."""
    execution = stderr.split()[1]
    with MoleClient(server.url, PASSWORD, fingerprint=server.fingerprint) as client:
        client.remove(execution)


def test_submit_wait_finishes_with_0(
    mole_server: ServerProcess, folder: Path, tmp_path: Path
) -> None:
    done = mole(
        "submit", folder, "--script", "pi.oms", "--wait", env=environment(mole_server, tmp_path)
    )
    assert done.returncode == 0, done.stderr
    remove_started(mole_server, done.stderr)
    assert "pi_avg" in done.stdout and "finished: 100 jobs completed" in done.stdout
    assert "started on https://127.0.0.1" in done.stderr
    assert "\x1b[" not in done.stdout  # not a terminal: plain lines


@pytest.mark.parametrize("api", ["auto", "token"])
def test_submit_wait_failing_ends_with_1(
    mole_server: ServerProcess, folder: Path, tmp_path: Path, api: str
) -> None:
    env = environment(mole_server, tmp_path)
    failed = mole("submit", folder, "--script", "fail.oms", "--wait", "--api", api, env=env)
    assert failed.returncode == 1
    remove_started(mole_server, failed.stderr)
    assert "[SEVERE] local: task fragile failed: ValueError: no good value here" in failed.stderr
    assert "error: Mole execution failed when executing capsule: fragile" in failed.stderr


def test_commands_on_one_execution(
    mole_server: ServerProcess, folder: Path, tmp_path: Path
) -> None:
    env = environment(mole_server, tmp_path)
    submitted = mole("submit", folder, "--script", "pi.oms", "--tag", "notebook=pi.ipynb", env=env)
    assert submitted.returncode == 0, submitted.stderr
    execution = submitted.stdout.strip()
    assert len(execution) == 36  # only the id: `ID=$(jupyter-mole submit ...)` works

    followed = mole("output", execution, "--follow", env=env)
    assert followed.returncode == 0 and "pi_avg" in followed.stdout
    state = mole("state", execution, env=env)
    assert state.stdout.startswith(f"{execution}  finished: 100/100 jobs completed")
    output = mole("output", execution, env=env)
    assert output.returncode == 0 and output.stdout.splitlines()[0].split() == ["pi_avg", "pi_med"]

    listed = mole("list", env=env)
    assert execution in listed.stdout.split()
    details = mole("list", "--details", env=env)
    assert details.stdout.splitlines()[0].split("\t") == [
        "id", "state", "script", "submitted", "jobs", "tags",
    ]  # fmt: skip
    row = next(line for line in details.stdout.splitlines() if line.startswith(execution))
    fields = row.split("\t")
    assert fields[1:3] == ["finished", "pi.oms"] and fields[4:] == ["100/100", "notebook=pi.ipynb"]

    target = tmp_path / "out" / "result.csv"
    fetched = mole("download", execution, "result.csv", "-o", target, env=env)
    assert fetched.returncode == 0 and fetched.stdout.strip() == str(target)
    assert target.read_text().startswith("pi_avg,pi_med")
    target.write_text("mine")
    again = mole("download", execution, "result.csv", "-o", target, env=env)
    assert (
        again.returncode == 1 and "already exists" in again.stderr and "--overwrite" in again.stderr
    )
    assert target.read_text() == "mine"
    forced = mole("download", execution, "result.csv", "-o", target, "--overwrite", env=env)
    assert forced.returncode == 0 and target.read_text().startswith("pi_avg")
    whole = mole("download", execution, env=env, cwd=tmp_path)  # default: a folder named by id
    assert whole.returncode == 0, whole.stderr
    assert (tmp_path / execution / "data" / "input.txt").read_text() == "some input\n"

    removed = mole("remove", execution, env=env)
    assert removed.returncode == 0 and "removed" in removed.stdout
    gone = mole("state", execution, env=env)
    assert gone.returncode == 1 and "Execution not found" in gone.stderr
    assert execution not in mole("list", env=env).stdout


def test_bad_script_is_reported(mole_server: ServerProcess, folder: Path, tmp_path: Path) -> None:
    refused = mole("submit", folder, "--script", "bad.oms", env=environment(mole_server, tmp_path))
    assert refused.returncode == 1
    assert "jupyter-mole submit: syntax error in bad.oms, line 2" in refused.stderr
    assert refused.stdout == ""


def test_missing_url_says_how_to_give_one(tmp_path: Path) -> None:
    missing = mole("list", env=environment(None, tmp_path))
    assert missing.returncode == 2
    assert "--url" in missing.stderr and "MOLE_URL" in missing.stderr
    usage = mole("submit", tmp_path, env=environment(None, tmp_path))  # no --script
    assert usage.returncode == 2 and "--script" in usage.stderr


def test_options_instead_of_environment(mole_server: ServerProcess, tmp_path: Path) -> None:
    env = environment(None, tmp_path)
    secret = tmp_path / "secret"
    secret.write_text(f"{PASSWORD}  \r\nsecond line\n")  # read as the server reads it: stripped
    common = ["--url", mole_server.url, "--password-file", secret]
    listed = mole("list", *common, "--ca-file", mole_server.certfile or "", env=env)
    assert listed.returncode == 0, listed.stderr
    pinned = mole("list", *common, "--fingerprint", ":".join(["00"] * 32), env=env)
    assert pinned.returncode == 1 and "not the pinned" in pinned.stderr
    unverified = mole("list", *common, env=env)
    assert unverified.returncode == 1 and "certificate verify failed" in unverified.stderr
    assert "--fingerprint" in unverified.stderr  # says how to trust a self-signed server
    assert PASSWORD not in unverified.stderr + pinned.stderr


def test_ctrl_c_detaches_and_cancel_stops(
    mole_server: ServerProcess, folder: Path, tmp_path: Path
) -> None:
    env = environment(mole_server, tmp_path)
    args = [sys.executable, "-m", "jupyter_mole", "submit", str(folder), "--script", "sleepy.oms"]
    process = subprocess.Popen(
        [*args, "--wait"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    first = process.stderr.readline()  # "execution ID started on URL"
    assert " started on " in first, first
    execution = first.split()[1]
    with MoleClient(mole_server.url, PASSWORD, fingerprint=mole_server.fingerprint) as client:
        deadline = time.monotonic() + 60
        while client.state(execution).running < 2:  # both jobs sleeping
            assert time.monotonic() < deadline
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=60)
        assert process.returncode == 130, rest
        assert "detached" in rest and f"jupyter-mole cancel {execution}" in rest
        assert client.state(execution).state == "running"  # Ctrl-C did not stop it
        cancelled = mole("cancel", execution, env=env)
        assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
        assert client.state(execution).state == "cancelled"
        followed = mole("output", execution, "--follow", env=env)
        assert followed.returncode == 1 and "cancelled" in followed.stderr
        client.remove(execution)
