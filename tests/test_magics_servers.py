"""Which server ``%mole`` talks to, and a kernel's Ctrl-C, with IPython in a child process.

Split out of ``test_magics.py`` (which keeps the cell and line magics, the
execution handle, uploads and the live view) to keep each module under 600
lines. The fixtures are in ``tests/kernels.py``, as is ``QUICK_SCRIPT``.
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from jupyter_mole.client import MoleClient
from jupyter_mole.connection import (
    FILE_NAME,
    Connection,
    read_connection_file,
    write_connection_file,
)
from jupyter_mole.kernel import Execution
from tests.kernels import QUICK_SCRIPT, magics, stop_server
from tests.servers import PASSWORD, PI_SCRIPT, SLEEPY_SCRIPT, ServerProcess

# IPython as a kernel runs it: one shell, one cell (read from the file named on the command line).
DRIVER = """
import sys
from IPython.testing.globalipapp import start_ipython

ip = start_ipython()
ip.run_line_magic("load_ext", "jupyter_mole")
print("READY", flush=True)
result = ip.run_cell(open(sys.argv[1]).read())
error = result.error_in_exec
print("RESULT", type(error).__name__ if error is not None else "ok", flush=True)
run = ip.user_ns.get("run")
print("ID", run.id if run is not None else "", flush=True)
"""


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


# -- which server ---------------------------------------------------------------------------
def test_connect_with_a_password_file_beats_the_environment(
    shell: InteractiveShell,
    served: ServerProcess,
    start_server: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    shell.run_line_magic("mole", "status")
    out = capsys.readouterr().out
    assert out.splitlines() == [
        f"connected to jupyter-mole (ours) at {served.url} (MOLE_URL)",
        "version 0.1.0; API generation: token, job; engine: embedded",
    ]

    private = start_server(https=False, password="another secret")
    secret = tmp_path / "password.txt"
    secret.write_text("another secret\n")
    secret.chmod(0o600)
    shell.run_line_magic("mole", f"connect {private.url} --password-file {secret}")
    assert capsys.readouterr().out.startswith(
        f"connected to jupyter-mole (ours) at {private.url} (%mole connect)\n"
    )
    shell.run_line_magic("mole", "list")
    assert capsys.readouterr().out == "no executions\n"
    run = shell.run_cell_magic("mole", "quick.oms", QUICK_SCRIPT)
    with MoleClient(private.url, "another secret") as mole:
        assert mole.list() == [run.id]

    secret.write_text("wrong\n")
    with pytest.raises(UsageError, match=r"%mole connect: .*password"):
        shell.run_line_magic("mole", f"connect {private.url} --password-file {secret}")
    with pytest.raises(UsageError, match=r"%mole connect: cannot read the password file .*nowhere"):
        shell.run_line_magic("mole", f"connect {private.url} --password-file {tmp_path}/nowhere")


def test_the_environment_beats_the_connection_file(
    shell: InteractiveShell,
    jupyter_dirs: dict[str, Path],
    start_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    recorded = start_server(https=False, password="recorded")
    wanted = start_server(https=False, password="wanted")
    write_connection_file(Connection(recorded.url, "recorded"))
    secret = tmp_path / "wanted.txt"
    secret.write_text("wanted\n")
    monkeypatch.setenv("MOLE_URL", wanted.url)
    monkeypatch.setenv("MOLE_PASSWORD_FILE", str(secret))
    shell.run_line_magic("mole", "status")
    assert capsys.readouterr().out.startswith(
        f"connected to jupyter-mole (ours) at {wanted.url} (MOLE_URL)"
    )
    shell.run_line_magic("mole", "list")  # an authenticated call: with MOLE_PASSWORD_FILE's
    assert capsys.readouterr().out == "no executions\n"


def test_the_connection_file_is_used_when_nothing_is_set(
    shell: InteractiveShell,
    jupyter_dirs: dict[str, Path],
    start_server: Any,
    capsys: pytest.CaptureFixture,
) -> None:
    # As the Jupyter server extension writes it, for a server it runs or was pointed at.
    recorded = start_server(https=False, password="recorded")
    path = write_connection_file(Connection(recorded.url, "recorded"))
    written = path.read_text()
    shell.run_line_magic("mole", "status")
    assert capsys.readouterr().out.startswith(
        f"connected to jupyter-mole (ours) at {recorded.url} (the connection file)"
    )
    assert path.read_text() == written  # nothing else was started


def test_the_embedded_server_is_started_when_nothing_else_and_outlives_the_kernel(
    ipython: InteractiveShell,
    jupyter_dirs: dict[str, Path],
    folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    # A connection file left by a server that has gone: not to be trusted.
    gone = dead_pid()
    write_connection_file(Connection("http://127.0.0.1:9", "old", kind="embedded", pid=gone))
    cell = tmp_path / "cell.py"
    cell.write_text("%%mole pi.oms --no-wait -o run\n" + PI_SCRIPT)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "IPYTHONDIR": str(tmp_path / "ipython")}
    kernel = subprocess.run(
        [sys.executable, str(driver), str(cell)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "RESULT ok" in kernel.stdout, kernel.stdout + kernel.stderr
    ident = re.search(r"^ID (\S+)$", kernel.stdout, re.MULTILINE).group(1)  # type: ignore[union-attr]

    # The kernel has exited; the server it started runs on, and says where it is.
    path = jupyter_dirs["runtime"] / FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    recorded = read_connection_file(path)
    assert recorded is not None and recorded.kind == "embedded" and recorded.password
    assert recorded.url.startswith("http://127.0.0.1:") and recorded.pid not in (None, gone)
    assert psutil.pid_exists(recorded.pid)  # type: ignore[arg-type]
    executions = jupyter_dirs["data"] / "mole" / "executions"
    assert (executions / ident).is_dir()  # its state is in Jupyter's data directory

    # A new kernel finds it through the connection file and loses nothing.
    ipython.extension_manager.loaded.discard("jupyter_mole")
    ipython.run_line_magic("load_ext", "jupyter_mole")
    try:
        ipython.run_line_magic("mole", "status")
        out = capsys.readouterr().out
        assert out.startswith(
            f"connected to jupyter-mole (ours) at {recorded.url} "
            f"(embedded server (pid {recorded.pid}), the connection file)\n"
        )
        run = Execution(magics(ipython).client(), ident, folder=folder)
        assert run.wait(timeout=90).state == "finished"
        ipython.run_line_magic("mole", "list")
        assert re.search(rf"^{ident}\s+finished\s+pi\.oms\s+100/100", capsys.readouterr().out, re.M)
        assert run.results("result.csv")["pi_avg"][0] == pytest.approx(3.14, abs=0.05)
        assert read_connection_file(path) == recorded  # reused, not replaced

        # Once it has gone, the next magic starts another one (and records it).
        assert stop_server(recorded.pid) == []  # type: ignore[arg-type]  # no stray worker
        assert not psutil.pid_exists(recorded.pid)  # type: ignore[arg-type]
        ipython.run_line_magic("mole", "status")
        again = read_connection_file(path)
        assert again is not None and again.pid != recorded.pid
        assert f"(embedded server (pid {again.pid}), started by this kernel)" in (
            capsys.readouterr().out
        )
    finally:
        if magics(ipython)._client is not None:
            magics(ipython)._client.close()


def test_ctrl_c_while_waiting_cancels_the_execution_and_still_raises(
    jupyter_dirs: dict[str, Path], start_server: Any, folder: Path, tmp_path: Path
) -> None:
    server = start_server(https=False)
    cell = tmp_path / "cell.py"
    cell.write_text("%%mole sleepy.oms -o run\n" + SLEEPY_SCRIPT)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {
        **os.environ,
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "MOLE_URL": server.url,
        "MOLE_PASSWORD": PASSWORD,
    }
    kernel = subprocess.Popen(
        [sys.executable, str(driver), str(cell)],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with MoleClient(server.url, PASSWORD) as mole:
            deadline = time.monotonic() + 90
            while True:  # until its jobs run
                assert kernel.poll() is None, kernel.communicate()
                assert time.monotonic() < deadline, "the jobs never started"
                ids = mole.list()
                if ids and mole.state(ids[0]).running > 0:
                    break
                time.sleep(0.2)
            sleeping = [
                p for p in psutil.Process(server.process.pid).children(recursive=True)
                if p.name() == "sleep"
            ]  # fmt: skip
            assert sleeping
            kernel.send_signal(signal.SIGINT)
            out, err = kernel.communicate(timeout=60)
            assert "RESULT KeyboardInterrupt" in out, out + err
            assert f"interrupted: cancelling {ids[0]}" in err
            assert f"ID {ids[0]}" in out
            assert mole.state(ids[0]).state == "cancelled"
        _, alive = psutil.wait_procs(sleeping, timeout=15)
        assert not alive, f"sleep processes left running: {alive}"
    finally:
        if kernel.poll() is None:
            kernel.kill()
            kernel.communicate()
