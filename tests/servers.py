"""Real ``jupyter-mole serve`` processes on loopback, for the tests of the server and the client.

``serve_process`` starts one and waits until it listens; the ``mole_server``
fixture shares one HTTPS server with a password across a test session, and
``start_server`` starts private ones (for restarts, plain HTTP, no password).
The ``http`` and ``token`` fixtures (one per test module) talk to ``mole_server``
on the wire, as a client written for OpenMOLE would.
"""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import ssl
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

PASSWORD = "correct horse battery staple"


@dataclasses.dataclass
class ServerProcess:
    url: str
    password: str | None
    state_dir: Path
    process: subprocess.Popen
    log: Path
    certfile: Path | None = None
    fingerprint: str | None = None

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What an HTTP client needs to trust this server's self-signed certificate."""
        if self.certfile is None:
            return True
        return ssl.create_default_context(cafile=str(self.certfile))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def serve_process(
    state_dir: Path,
    *,
    password: str | None = PASSWORD,
    https: bool = True,
    extra: tuple[str, ...] = (),
    timeout: float = 60,
) -> ServerProcess:
    """Start ``jupyter-mole serve`` on a free loopback port and wait until it answers."""
    state_dir.mkdir(parents=True, exist_ok=True)
    url_file = state_dir / "url.txt"
    url_file.unlink(missing_ok=True)
    args = [sys.executable, "-m", "jupyter_mole", "serve", "--port", "0", "--host", "127.0.0.1"]
    args += ["--state-dir", str(state_dir), "--url-file", str(url_file), "--workers", "2"]
    if password is None:
        args.append("--no-password")
    else:
        password_file = state_dir / "password.txt"
        password_file.write_text(password + "\n")
        args += ["--password-file", str(password_file)]
    if not https:
        args.append("--http")
    args += list(extra)
    log = state_dir / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "MOLE_PASSWORD"}
    with open(log, "ab") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    deadline = time.time() + timeout
    while not url_file.exists():
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}:\n{log.read_text()}")
        if time.time() > deadline:
            process.kill()
            raise AssertionError(f"the server did not start in {timeout} s:\n{log.read_text()}")
        time.sleep(0.05)
    url = url_file.read_text().strip()
    server = ServerProcess(url, password, state_dir, process, log)
    if https:
        server.certfile = state_dir / "tls" / "cert.pem"
        for line in log.read_text().splitlines():
            if "fingerprint:" in line:
                server.fingerprint = line.rsplit(" ", 1)[-1]
    return server


@pytest.fixture(scope="session")
def mole_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One HTTPS server with a password for the whole session."""
    server = serve_process(tmp_path_factory.mktemp("mole-server"))
    yield server
    server.stop()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start private servers (stopped at the end of the test): ``start_server(https=False)``."""
    started: list[ServerProcess] = []

    def start(state_dir: Path | None = None, **kwargs: object) -> ServerProcess:
        server = serve_process(state_dir or tmp_path / f"server{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def make_archive(folder: Path, files: dict[str, str]) -> Path:
    """A tar.gz of ``files`` (relative path -> text), written beside ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    target = folder.with_suffix(".tgz")
    with tarfile.open(target, "w:gz") as tar:
        for name in files:
            tar.add(folder / name, arcname=name)
    return target


PI_SCRIPT = (Path(__file__).parent.parent / "notebooks" / "pi.oms").read_text()

SLEEPY_SCRIPT = """
x = Val(int)
DirectSampling(
    evaluation=SystemExecTask("sleep 30", inputs=[x]),
    sampling=x.in_([1, 2]),
)
"""

FAILING_SCRIPT = """
x = Val(int)

@PythonTask(inputs=[x])
def fragile(x):
    raise ValueError("no good value here")

DirectSampling(evaluation=fragile, sampling=x.in_([1]))
"""


@pytest.fixture(scope="module")
def http(mole_server: ServerProcess) -> Iterator[httpx.Client]:
    """A client of the session's server (HTTPS, password), with no token of its own."""
    with httpx.Client(base_url=mole_server.url, verify=mole_server.verify, timeout=90) as client:
        yield client


def new_token(http: httpx.Client, password: str = PASSWORD) -> str:
    answer = http.post("/token", data={"password": password})
    assert answer.status_code == 202, answer.text
    return answer.json()["token"]


@pytest.fixture(scope="module")
def token(http: httpx.Client) -> str:
    return new_token(http)


def tar_entries(data: bytes) -> dict[str, bytes | None]:
    """Entries of a tar.gz: name -> bytes (None for a folder)."""
    out: dict[str, bytes | None] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar:
            f = tar.extractfile(member) if member.isfile() else None
            out[member.name] = f.read() if f else None
    return out


# Job x=1 fails on its first try (a WARNING, resubmitted); job x=0 holds the
# execution running until the test drops a "release" file into the work directory.
RETRY_SCRIPT = """
import time
x = Val(int)

@PythonTask(inputs=[x])
def flaky(x):
    if x == 0:
        start = time.time()
        while work_directory.exists() and not (work_directory / "release").exists():
            if time.time() - start > 60:
                break
            time.sleep(0.05)
        return None
    marker = work_directory / "tried"
    if not marker.exists():
        marker.write_text("once")
        raise RuntimeError("flaky on its first try")
    return None

DirectSampling(evaluation=flaky.on(LocalEnvironment(2, retry=2)), sampling=x.in_([0, 1]))
"""
