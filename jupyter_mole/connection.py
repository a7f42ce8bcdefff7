"""Which server to talk to, and the embedded one started when there is none.

Everything talks the REST API to one server per Jupyter installation, so that
a run started from any notebook shows in every view and survives a kernel
restart. The order, most explicit first: ``%mole connect``; ``MOLE_URL``
(with ``MOLE_PASSWORD`` or ``MOLE_PASSWORD_FILE``); the connection file in
Jupyter's runtime directory (written by the Jupyter server extension or by an
earlier kernel); otherwise the embedded server is started as a background
process on a free loopback port with a generated password, and the
connection file (mode 0600) says where it is for everyone else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "APIS",
    "FILE_NAME",
    "ROOT_VARIABLE",
    "Connection",
    "NoServerError",
    "connection_file",
    "default_state_directory",
    "from_environment",
    "is_alive",
    "read_connection_file",
    "resolve",
    "start_embedded",
    "write_connection_file",
]

FILE_NAME = "jupyter-mole-server.json"
ROOT_VARIABLE = "MOLE_JUPYTER_ROOT"
"""Set by the server extension to Jupyter's root folder, for the kernels that Jupyter starts:
``%%mole`` tags executions with the notebook's path relative to it, as the sidebar names files."""


class NoServerError(Exception):
    """No server could be found or started; the message says what to do."""


APIS = ("auto", "job", "token")


@dataclasses.dataclass
class Connection:
    """Where a server is and how to reach it: authentication, TLS trust, the API to speak.

    Everything a client needs is here, so that a kernel reading the connection
    file talks to the server exactly as the Jupyter extension that wrote it
    does (a ``c.Mole.verify_tls = False`` backend included).
    """

    url: str
    password: str | None = None
    fingerprint: str | None = None
    ca_file: str | None = None
    kind: str = "remote"  # "embedded" when we started it
    pid: int | None = None
    source: str = ""  # how it was found: "connect", "environment", "connection file", "started"
    verify_tls: bool = True  # False: accept any certificate (unless pinned or a CA file is given)
    api: str = "auto"  # "auto" (detect), "job" or "token" (OpenMOLE's API generations)
    state_directory: str | None = None  # an embedded server's: where its executions are kept

    def to_json(self) -> dict[str, Any]:
        obj = dataclasses.asdict(self)
        obj.pop("source")
        return {k: v for k, v in obj.items() if v is not None}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], source: str = "") -> Connection:
        fields = {f.name for f in dataclasses.fields(cls)} - {"source"}
        values = {k: v for k, v in obj.items() if k in fields}
        # Written by other versions, or by hand: a wrong type must not turn checks off.
        if not isinstance(values.get("verify_tls", True), bool):
            values.pop("verify_tls")
        if values.get("api", "auto") not in APIS:
            values.pop("api")
        return cls(**values, source=source)

    def client_options(self) -> dict[str, Any]:
        """The keyword arguments of ``MoleClient``/``AsyncMoleClient`` for this server.

        The trust, strongest first: a pinned fingerprint, a CA file, then
        ``verify_tls`` (the system's authorities, or nothing at all when False).
        """
        verify: bool | str = self.ca_file or self.verify_tls
        return {
            "password": self.password,
            "fingerprint": self.fingerprint,
            "verify": verify,
            "api": self.api,
        }


def _runtime_directory() -> Path:
    from jupyter_core.paths import jupyter_runtime_dir

    return Path(jupyter_runtime_dir())


def connection_file() -> Path:
    """The connection file, in Jupyter's runtime directory."""
    return _runtime_directory() / FILE_NAME


def default_state_directory() -> Path:
    """Where the embedded server keeps its executions: Jupyter's data directory."""
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "mole"


def write_connection_file(connection: Connection, path: Path | None = None) -> Path:
    """Write it atomically, readable by its owner only (it holds a password)."""
    path = path or connection_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(connection.to_json(), f)
    tmp.replace(path)
    return path


def read_connection_file(path: Path | None = None) -> Connection | None:
    path = path or connection_file()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("url"), str):
        return None
    return Connection.from_json(data, source="connection file")


def from_environment(env: Mapping[str, str] | None = None) -> Connection | None:
    """``MOLE_URL`` with ``MOLE_PASSWORD`` or ``MOLE_PASSWORD_FILE`` (and ``MOLE_FINGERPRINT``)."""
    env = os.environ if env is None else env
    url = env.get("MOLE_URL")
    if not url:
        return None
    password = env.get("MOLE_PASSWORD")
    if password is None and env.get("MOLE_PASSWORD_FILE"):
        try:
            password = Path(env["MOLE_PASSWORD_FILE"]).read_text().splitlines()[0].strip()
        except (OSError, IndexError) as e:
            raise NoServerError(
                f"MOLE_PASSWORD_FILE={env['MOLE_PASSWORD_FILE']}: cannot read a password from it ({e})"
            ) from None
    return Connection(
        url.rstrip("/"),
        password,
        env.get("MOLE_FINGERPRINT"),
        env.get("MOLE_CA_FILE"),
        source="environment",
    )


def is_alive(connection: Connection, timeout: float = 3.0) -> bool:
    """Whether a jupyter-mole server answers there (its pid, when known, must be alive too)."""
    if connection.pid is not None:
        try:
            os.kill(connection.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    try:
        verify: Any = connection.ca_file or not connection.url.startswith("https")
        answer = httpx.get(f"{connection.url}/service-info", timeout=timeout, verify=verify)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One process at a time starts the embedded server."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def start_embedded(
    state_directory: Path | None = None,
    path: Path | None = None,
    timeout: float = 60,
    workers: int | None = None,
) -> Connection:
    """Start the embedded server in the background (or reuse a live one) and record it."""
    path = path or connection_file()
    state = (state_directory or default_state_directory()).resolve()
    with _locked(path.with_suffix(".lock")):
        existing = read_connection_file(path)
        if existing is not None and existing.kind == "embedded" and is_alive(existing):
            return existing
        state.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(32)
        password_file = state / "password"
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        url_file = state / "url"
        url_file.unlink(missing_ok=True)
        args = [
            sys.executable, "-m", "jupyter_mole", "serve", "--http", "--host", "127.0.0.1",
            "--port", "0", "--state-dir", str(state), "--password-file", str(password_file),
            "--url-file", str(url_file),
        ]  # fmt: skip
        if workers:
            args += ["--workers", str(workers)]
        env = {k: v for k, v in os.environ.items() if k != "MOLE_PASSWORD"}
        with open(state / "server.log", "ab") as log:
            process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=env,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not url_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                if process.poll() is None:
                    process.kill()
                raise NoServerError(
                    f"the embedded server did not start; its log is {state / 'server.log'}"
                )
            time.sleep(0.05)
        connection = Connection(
            url_file.read_text().strip(),
            password,
            kind="embedded",
            pid=process.pid,
            source="started",
            state_directory=str(state),
        )
        write_connection_file(connection, path)
        return connection


def resolve(explicit: Connection | None = None, env: Mapping[str, str] | None = None) -> Connection:
    """The server to use, in the documented order, starting the embedded one as a last resort."""
    if explicit is not None:
        return explicit
    from_env = from_environment(env)
    if from_env is not None:
        return from_env
    recorded = read_connection_file()
    # A configured backend (the Jupyter extension's Mole.url) is used as it is: OpenMOLE has no
    # /service-info to probe, and an unreachable one must say so, not be replaced silently.
    if recorded is not None and (recorded.kind != "embedded" or is_alive(recorded)):
        return recorded
    return start_embedded()
