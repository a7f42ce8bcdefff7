"""Kernels for the tests of the magics: a real IPython shell, isolated from Jupyter's home.

Every test that asks for ``jupyter_dirs`` (or ``shell``) runs with Jupyter's
runtime, data and config directories in its own temporary folder and no
``MOLE_*`` setting, so that the connection file and the embedded server's state
never touch the real home; any embedded server it starts is stopped at its end.
``shell`` is the session's IPython after ``%load_ext jupyter_mole``, with fresh
magics (as in a new kernel); ``served`` points the magics at the session's
HTTPS server through ``MOLE_URL``. Registered as a plugin by ``conftest.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from IPython.core.interactiveshell import InteractiveShell

from jupyter_mole.client import MoleClient
from jupyter_mole.connection import FILE_NAME, read_connection_file
from tests.servers import PASSWORD, ServerProcess

MOLE_VARIABLES = (
    "MOLE_URL",
    "MOLE_PASSWORD",
    "MOLE_PASSWORD_FILE",
    "MOLE_FINGERPRINT",
    "MOLE_CA_FILE",
    "MOLE_NO_WIDGETS",
    "MOLE_MAX_UPLOAD",
    "JPY_SESSION_NAME",
    "MOLE_JUPYTER_ROOT",
)


# -- isolation: Jupyter's directories, and the embedded servers started by tests --------------
def isolate_jupyter(monkeypatch: pytest.MonkeyPatch, root: Path) -> dict[str, Path]:
    """Point Jupyter's runtime, data and config directories into ``root``; no MOLE_* settings."""
    dirs = {
        "runtime": root / "runtime",
        "data": root / "data",
        "config": root / "config",
    }
    for name, path in dirs.items():
        path.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(f"JUPYTER_{name.upper()}_DIR", str(path))
    for name in MOLE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return dirs


def install_python_kernel(data_dir: Path) -> None:
    """A ``python3`` kernel that is this very Python, so notebooks run in the tests' environment."""
    spec = data_dir / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (the tests' environment)",
                "language": "python",
            }
        )
    )


def _is_our_server(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        command = " ".join(process.cmdline())
        return "jupyter_mole" in command and " serve" in command
    return False


def server_session(pid: int) -> list[psutil.Process]:
    """The processes of the embedded server's session (it runs in a session of its own)."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(process.pid) == pid and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
    return found


def stop_server(pid: int) -> list[str]:
    """SIGTERM an embedded server we started, wait for it, and kill what its session left.

    Returns the command lines of the processes it left behind (there should be none).
    """
    try:
        process = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    if not _is_our_server(process):
        return []  # a stale pid, reused by someone else's process
    process.terminate()
    try:
        process.wait(30)
    except psutil.TimeoutExpired:
        process.kill()
        process.wait(10)
    left = []
    for leftover in server_session(pid):
        with contextlib.suppress(psutil.Error):
            left.append(" ".join(leftover.cmdline()))
            leftover.kill()
    return left


def stop_embedded(runtime: Path) -> list[str]:
    """Stop the embedded server the connection file in ``runtime`` names, if any."""
    recorded = read_connection_file(runtime / FILE_NAME)
    if recorded is not None and recorded.pid is not None:
        return stop_server(recorded.pid)
    return []


@pytest.fixture
def jupyter_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    dirs = isolate_jupyter(monkeypatch, tmp_path / "jupyter")
    yield dirs
    stop_embedded(dirs["runtime"])


@pytest.fixture(scope="session")
def ipython(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InteractiveShell]:
    """One real IPython shell for the session (IPython keeps a single one per process)."""
    from IPython.testing.globalipapp import start_ipython

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IPYTHONDIR", str(tmp_path_factory.mktemp("ipython")))
        shell = start_ipython()
        assert shell is not None
        yield shell


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The notebook's folder: the working directory."""
    path = tmp_path / "notebook"
    path.mkdir()
    monkeypatch.chdir(path)
    return path


@pytest.fixture
def shell(
    ipython: InteractiveShell, jupyter_dirs: dict[str, Path], folder: Path
) -> Iterator[InteractiveShell]:
    """The shell after ``%load_ext jupyter_mole``, with fresh magics (as in a new kernel)."""
    ipython.extension_manager.loaded.discard("jupyter_mole")
    ipython.run_line_magic("load_ext", "jupyter_mole")
    yield ipython
    mole = magics(ipython)
    if mole._client is not None:
        mole._client.close()
    for name in ("run", "other"):
        ipython.user_ns.pop(name, None)


def magics(shell: InteractiveShell) -> Any:
    return shell.magics_manager.registry["MoleMagics"]


@pytest.fixture
def served(
    monkeypatch: pytest.MonkeyPatch, jupyter_dirs: dict[str, Path], mole_server: ServerProcess
) -> ServerProcess:
    """MOLE_URL and friends name the session's HTTPS server."""
    monkeypatch.setenv("MOLE_URL", mole_server.url)
    monkeypatch.setenv("MOLE_PASSWORD", PASSWORD)
    assert mole_server.fingerprint
    monkeypatch.setenv("MOLE_FINGERPRINT", mole_server.fingerprint)
    return mole_server


@pytest.fixture
def client(mole_server: ServerProcess) -> Iterator[MoleClient]:
    with MoleClient(mole_server.url, PASSWORD, fingerprint=mole_server.fingerprint) as mole:
        yield mole


def info_of(client: MoleClient, execution_id: str) -> Any:
    return next(i for i in client.list(details=True) if i.id == execution_id)


# A quick script for the magics tests (test_magics*, test_magics_connection imports it).
QUICK_SCRIPT = """
x, y = Val(int), Val(int)

@PythonTask(inputs=[x], outputs=[y])
def double(x):
    print(f"hello {x}")
    return {"y": 2 * x}

DirectSampling(evaluation=double, sampling=x.in_(range(4))).hook(work_directory / "r.csv")
"""


# -- a real kernel, driven as a front end drives it ----------------------------------------------
class RealKernel:
    """A real ipykernel (this Python), driven over ZeroMQ by jupyter_client as a front end.

    It keeps what a front end would: the widget models (``comm_open`` states, updated by
    ``comm_msg`` updates), the streams and the display data. ``click`` sends what a browser
    sends when a person clicks a button.
    """

    def __init__(self, cwd: Path) -> None:
        from jupyter_client.manager import KernelManager

        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(cwd=str(cwd))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.models: dict[str, dict[str, Any]] = {}
        self.streams: dict[str, str] = {"stdout": "", "stderr": ""}
        self.displays: list[dict[str, Any]] = []
        self.idle: set[str] = set()  # the requests whose outputs have all come

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)

    # -- reading what the kernel says ----------------------------------------------------
    def _take(self, message: dict[str, Any]) -> None:
        kind, content = message["msg_type"], message["content"]
        if kind == "comm_open" and content.get("target_name") == "jupyter.widget":
            self.models[content["comm_id"]] = dict(content["data"]["state"])
        elif kind == "comm_msg" and content["data"].get("method") == "update":
            self.models.setdefault(content["comm_id"], {}).update(content["data"]["state"])
        elif kind == "stream":
            self.streams[content["name"]] += content["text"]
        elif kind in ("display_data", "update_display_data"):
            self.displays.append(content)
        elif kind == "status" and content["execution_state"] == "idle":
            self.idle.add(message["parent_header"].get("msg_id", ""))

    def wait_for(self, condition: Any, timeout: float = 60, what: str = "") -> Any:
        """Read the kernel's messages until ``condition()`` is true (and return its value)."""
        import queue

        deadline = time.monotonic() + timeout
        while not (found := condition()):
            assert time.monotonic() < deadline, f"not in {timeout} s: {what or condition}"
            try:
                self._take(self.client.get_iopub_msg(timeout=0.2))
            except queue.Empty:
                pass
        return found

    def execute(self, code: str) -> str:
        return self.client.execute(code)

    def reply(self, msg_id: str, timeout: float = 60) -> dict[str, Any]:
        """The execute reply of ``msg_id`` (reading the messages that come meanwhile)."""
        import queue

        deadline = time.monotonic() + timeout
        while True:
            assert time.monotonic() < deadline, f"no reply in {timeout} s; {self.streams}"
            self.drain()
            try:
                message = self.client.get_shell_msg(timeout=0.2)
            except queue.Empty:
                continue
            if message["parent_header"].get("msg_id") == msg_id:  # and then its last output
                self.wait_for(lambda: msg_id in self.idle, 30, "the kernel's idle status")
                return message["content"]

    def drain(self) -> None:
        """Read every message the kernel has sent so far."""
        import queue

        while True:
            try:
                self._take(self.client.get_iopub_msg(timeout=0.05))
            except queue.Empty:
                return

    def run(self, code: str, timeout: float = 120) -> dict[str, Any]:
        reply = self.reply(self.execute(code), timeout)
        assert reply["status"] == "ok", (reply, self.streams)
        return reply

    # -- widgets --------------------------------------------------------------------------
    def widget(self, model: str, **values: Any) -> str | None:
        """The id of a widget model of this ``_model_name`` with these values, if shown yet."""
        for ident, state in self.models.items():
            if state.get("_model_name") == model and all(
                state.get(k) == v for k, v in values.items()
            ):
                return ident
        return None

    def children(self, ident: str) -> list[str]:
        return [c.removeprefix("IPY_MODEL_") for c in self.models[ident].get("children", [])]

    def click(self, ident: str) -> None:
        """What a front end sends when a person clicks the button ``ident``."""
        content = {"comm_id": ident, "data": {"method": "custom", "content": {"event": "click"}}}
        self.client.shell_channel.send(self.client.session.msg("comm_msg", content))


@pytest.fixture
def real_kernel(
    jupyter_dirs: dict[str, Path], folder: Path, tmp_path: Path
) -> Iterator[RealKernel]:
    """A real kernel of this Python in the notebook's folder, with Jupyter's directories isolated."""
    install_python_kernel(jupyter_dirs["data"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
        kernel = RealKernel(folder)
    try:
        yield kernel
    finally:
        kernel.close()
