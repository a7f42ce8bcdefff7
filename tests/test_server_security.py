"""The server as a security boundary: hostile archives, caps, password guessing, TLS, start-up.

Every refusal is a ``{"message"}`` saying what was wrong, with a 4xx status, and
leaves nothing behind in the state directory: no execution folder, no index
entry, no spooled upload.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.servers import PASSWORD, PI_SCRIPT, ServerProcess, new_token, serve_process

pytestmark = pytest.mark.timeout(120)


# -- plumbing ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth(http: httpx.Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {new_token(http)}"}


def tar_gz(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(name: str, data: bytes | None = b"x", **fields: Any) -> tuple[tarfile.TarInfo, Any]:
    info = tarfile.TarInfo(name)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


SCRIPT = member("pi.oms", PI_SCRIPT.encode())


def snapshot(server: ServerProcess) -> tuple[set[str], set[str]]:
    """What the state directory holds: execution folders (and index files), spooled uploads."""
    executions = server.state_dir / "executions"
    uploads = server.state_dir / "uploads"
    listing = {p.name for p in executions.iterdir()} if executions.exists() else set()
    spooled = {p.name for p in uploads.iterdir()} if uploads.exists() else set()
    return listing, spooled


def assert_nothing_left(server: ServerProcess, before: tuple[set[str], set[str]]) -> None:
    """The state directory is as it was (waiting a little for the spool's clean-up)."""
    deadline = time.monotonic() + 5
    while snapshot(server) != before and time.monotonic() < deadline:
        time.sleep(0.05)
    executions, spooled = snapshot(server)
    assert executions - {"index.sqlite-wal", "index.sqlite-shm"} == before[0] - {
        "index.sqlite-wal",
        "index.sqlite-shm",
    }
    assert spooled == before[1] == set()


def upload(
    http: httpx.Client, auth: dict[str, str], data: bytes, route: str = "/job"
) -> httpx.Response:
    files = {"script": (None, "pi.oms"), "workDirectory": ("w.tgz", data, "application/gzip")}
    if route == "/start":
        return http.post(route, params={"token": auth["Authorization"][7:]}, files=files)
    return http.post(route, headers=auth, files=files)


# -- hostile archives -----------------------------------------------------------------------------

TRUNCATED = tar_gz(SCRIPT, member("big.bin", os.urandom(60_000)))

ATTACKS: dict[str, tuple[bytes, str]] = {
    "absolute": (tar_gz(SCRIPT, member("/tmp/evil.txt")), "absolute path"),
    "dotdot": (tar_gz(SCRIPT, member("../evil.txt")), "'..'"),
    "dotdot-inside": (tar_gz(SCRIPT, member("a/../../evil.txt")), "'..'"),
    "symlink-out": (
        tar_gz(SCRIPT, member("out", None, type=tarfile.SYMTYPE, linkname="../../..")),
        "link pointing outside",
    ),
    "symlink-absolute": (
        tar_gz(SCRIPT, member("etc", None, type=tarfile.SYMTYPE, linkname="/etc")),
        "absolute path",
    ),
    "through-symlink": (
        tar_gz(
            SCRIPT,
            member("d", None, type=tarfile.SYMTYPE, linkname="."),
            member("d/x.txt"),
        ),
        "through the link",
    ),
    "hardlink-out": (
        tar_gz(SCRIPT, member("passwd", None, type=tarfile.LNKTYPE, linkname="/etc/passwd")),
        "hard link",
    ),
    "hardlink-dotdot": (
        tar_gz(SCRIPT, member("up", None, type=tarfile.LNKTYPE, linkname="../index.sqlite")),
        "hard link",
    ),
    "char-device": (
        tar_gz(SCRIPT, member("null", None, type=tarfile.CHRTYPE, devmajor=1, devminor=3)),
        "character device",
    ),
    "block-device": (
        tar_gz(SCRIPT, member("sda", None, type=tarfile.BLKTYPE, devmajor=8, devminor=0)),
        "block device",
    ),
    "fifo": (tar_gz(SCRIPT, member("pipe", None, type=tarfile.FIFOTYPE)), "FIFO"),
    "not-gzip": (b"this is plain text, not a tar.gz", "not gzip"),
    "gzip-not-tar": (gzip.compress(b"hello " * 1000), "not a tar"),
    "truncated": (TRUNCATED[: len(TRUNCATED) // 2], "truncated"),
    "empty": (b"", "empty"),
}


@pytest.mark.parametrize("route", ["/job", "/start"])
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_hostile_archive_is_refused_and_leaves_nothing(
    http: httpx.Client,
    auth: dict[str, str],
    mole_server: ServerProcess,
    attack: str,
    route: str,
) -> None:
    data, says = ATTACKS[attack]
    before = snapshot(mole_server)
    ids = http.get("/job", headers=auth).json()
    answer = upload(http, auth, data, route)
    assert answer.status_code == 417, answer.text
    message = answer.json()["message"]
    assert "workDirectory archive was refused" in message
    assert says.lower() in message.lower(), message
    assert "Traceback" not in message
    assert_nothing_left(mole_server, before)
    assert http.get("/job", headers=auth).json() == ids
    assert not Path("/tmp/evil.txt").exists()


def test_a_sound_archive_after_the_attacks_still_runs(
    http: httpx.Client, auth: dict[str, str]
) -> None:
    answer = upload(http, auth, tar_gz(SCRIPT, member("data/ok.txt")))
    assert answer.status_code == 200, answer.text
    assert http.delete(f"/job/{answer.json()['id']}", headers=auth).status_code == 200


# -- caps ----------------------------------------------------------------------------------------

MAX_UPLOAD, MAX_UNPACKED, MAX_FILES = 100_000, 50_000, 5


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = serve_process(
        tmp_path_factory.mktemp("capped"),
        https=False,
        extra=(
            "--max-upload", str(MAX_UPLOAD),
            "--max-unpacked", str(MAX_UNPACKED),
            "--max-files", str(MAX_FILES),
        ),
    )  # fmt: skip
    yield server
    server.stop()


@pytest.fixture(scope="module")
def capped_http(capped: ServerProcess) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    with httpx.Client(base_url=capped.url, timeout=60) as client:
        yield client, {"Authorization": f"Bearer {new_token(client)}"}


def test_upload_over_the_cap_is_413(
    capped: ServerProcess, capped_http: tuple[httpx.Client, dict[str, str]]
) -> None:
    http, auth = capped_http
    big = tar_gz(SCRIPT, member("noise.bin", os.urandom(MAX_UPLOAD)))  # incompressible
    for route in ("/job", "/start"):
        before = snapshot(capped)
        answer = upload(http, auth, big, route)
        assert answer.status_code == 413, answer.text
        assert "--max-upload" in answer.json()["message"]
        assert str(MAX_UPLOAD) in answer.json()["message"]
        assert answer.headers["connection"] == "close"  # answered unread: not reusable
        assert http.get("/service-info").status_code == 200  # on a new connection
        assert_nothing_left(capped, before)
    # Far over the cap, the answer still arrives whole, before the upload ends.
    huge = os.urandom(16 * 1024 * 1024)
    answer = upload(http, auth, huge)
    assert answer.status_code == 413, answer.text


def test_streamed_upload_over_the_cap_is_413(
    capped: ServerProcess, capped_http: tuple[httpx.Client, dict[str, str]]
) -> None:
    """Chunked, without Content-Length: the cap is enforced while the body streams in."""
    http, auth = capped_http
    boundary = "b0undary"

    def body() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="script"\r\n\r\npi.oms\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="workDirectory"; '
            f'filename="w.tgz"\r\nContent-Type: application/gzip\r\n\r\n'
        ).encode()
        for _ in range(40):
            yield os.urandom(8192)
        yield f"\r\n--{boundary}--\r\n".encode()

    before = snapshot(capped)
    answer = http.post(
        "/job",
        headers={**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content=body(),
    )
    assert answer.status_code == 413, answer.text
    assert "--max-upload" in answer.json()["message"]
    assert_nothing_left(capped, before)


def test_an_upload_under_the_cap_is_taken(
    capped_http: tuple[httpx.Client, dict[str, str]],
) -> None:
    http, auth = capped_http
    answer = upload(http, auth, tar_gz(SCRIPT, member("a.txt", b"a" * 1000)))
    assert answer.status_code == 200, answer.text
    assert http.delete(f"/job/{answer.json()['id']}", headers=auth).status_code == 200


def test_too_many_files(
    capped: ServerProcess, capped_http: tuple[httpx.Client, dict[str, str]]
) -> None:
    http, auth = capped_http
    data = tar_gz(SCRIPT, *[member(f"f{i}.txt") for i in range(MAX_FILES + 1)])
    before = snapshot(capped)
    answer = upload(http, auth, data)
    assert answer.status_code == 417
    message = answer.json()["message"]
    assert f"more than {MAX_FILES}" in message and "--max-files" in message
    assert_nothing_left(capped, before)


def test_too_many_bytes_unpacked(
    capped: ServerProcess, capped_http: tuple[httpx.Client, dict[str, str]]
) -> None:
    http, auth = capped_http
    data = tar_gz(SCRIPT, member("zeros.bin", bytes(MAX_UNPACKED * 20)))  # a small zip bomb
    assert len(data) < MAX_UPLOAD
    before = snapshot(capped)
    answer = upload(http, auth, data)
    assert answer.status_code == 417
    message = answer.json()["message"]
    assert "zeros.bin" in message and "--max-unpacked" in message
    assert_nothing_left(capped, before)


# -- password guessing ---------------------------------------------------------------------------


def test_repeated_wrong_passwords_are_braked(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server(https=False, extra=("--login-block-seconds", "1"))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        # A right password in between forgets the failures before it.
        for _ in range(2):
            for _ in range(4):
                assert http.post("/token", data={"password": "guess"}).status_code == 403
            assert http.post("/token", data={"password": PASSWORD}).status_code == 202
        # Five in a row block the address, even for the right password.
        for _ in range(5):
            assert http.post("/token", data={"password": "guess"}).status_code == 403
        answer = http.post("/token", data={"password": "guess"})
        assert answer.status_code == 429
        wait = int(answer.headers["retry-after"])
        assert 1 <= wait <= 2
        assert "too many wrong passwords" in answer.json()["message"]
        answer = http.post("/token", data={"password": PASSWORD})
        assert answer.status_code == 429 and "retry-after" in answer.headers
        # Other routes are not affected: a token still works.
        time.sleep(wait)
        assert http.post("/token", data={"password": PASSWORD}).status_code == 202
        # ...and the success forgot the past: one more wrong guess is only a 403.
        assert http.post("/token", data={"password": "guess"}).status_code == 403


# -- starting the server ---------------------------------------------------------------------------


def run_serve(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "MOLE_PASSWORD"}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "jupyter_mole", "serve", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=environment,
        timeout=60,
    )


def test_no_password_is_refused_off_loopback(tmp_path: Path) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        done = run_serve(
            ["--host", host, "--no-password", "--port", "0", "--state-dir", str(tmp_path)]
        )
        assert done.returncode == 2, done
        assert f"--no-password is refused on {host}" in done.stderr
        assert "127.0.0.1" in done.stderr  # what to do instead


def test_no_password_source_is_refused(tmp_path: Path) -> None:
    done = run_serve(["--port", "0", "--state-dir", str(tmp_path), "--http"])
    assert done.returncode == 2, done
    assert "no password" in done.stderr
    for way in ("--password-file", "MOLE_PASSWORD", "--no-password"):
        assert way in done.stderr
    assert not (tmp_path / "executions").exists()
    done = run_serve(["--port", "0", "--state-dir", str(tmp_path)], env={"MOLE_PASSWORD": ""})
    assert done.returncode == 2 and "MOLE_PASSWORD is set but empty" in done.stderr


def test_bad_caps_are_refused(tmp_path: Path) -> None:
    for option in ("--max-upload", "--max-files", "--max-unpacked"):
        done = run_serve(["--no-password", "--state-dir", str(tmp_path), option, "-3"])
        assert done.returncode == 2 and option in done.stderr


def test_password_from_the_environment(tmp_path: Path) -> None:
    url_file = tmp_path / "url.txt"
    environment = {k: v for k, v in os.environ.items() if k != "MOLE_PASSWORD"}
    environment["MOLE_PASSWORD"] = "from the environment"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter_mole", "serve", "--port", "0", "--http",
            "--state-dir", str(tmp_path), "--url-file", str(url_file), "--workers", "1",
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=environment,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not url_file.exists():
            assert process.poll() is None, "the server exited"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with httpx.Client(base_url=url_file.read_text().strip(), timeout=30) as http:
            assert http.post("/token", data={"password": PASSWORD}).status_code == 403
            answer = http.post("/token", data={"password": "from the environment"})
            assert answer.status_code == 202
    finally:
        process.terminate()
        process.wait(60)


def _sha256_hex(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest().upper()


def test_https_by_default_with_the_printed_fingerprint(mole_server: ServerProcess) -> None:
    assert mole_server.url.startswith("https://")
    assert mole_server.certfile is not None and mole_server.fingerprint
    printed = mole_server.fingerprint.replace(":", "")
    cert = x509.load_pem_x509_certificate(mole_server.certfile.read_bytes())
    assert printed == cert.fingerprint(hashes.SHA256()).hex().upper()
    # The certificate on the wire is that one.
    parts = urllib.parse.urlsplit(mole_server.url)
    served = ssl.get_server_certificate((parts.hostname, parts.port))
    assert printed == _sha256_hex(ssl.PEM_cert_to_DER_cert(served))
    # Not trusted blindly: without the pinned certificate, verification fails.
    with pytest.raises(httpx.ConnectError):
        httpx.get(mole_server.url + "/service-info", timeout=10)
    # And plain HTTP on that port gets no answer.
    with pytest.raises(httpx.HTTPError):
        httpx.get(mole_server.url.replace("https://", "http://") + "/service-info", timeout=10)


def test_http_when_asked(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(https=False)
    assert server.url.startswith("http://") and server.fingerprint is None
    answer = httpx.get(server.url + "/service-info", timeout=10)
    assert answer.status_code == 200 and answer.json()["auth"] == "token"
    assert not (server.state_dir / "tls").exists()


# -- user mistakes never crash a request ------------------------------------------------------------

BOUNDARY = "XyZ"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def part(name: str, value: bytes, filename: str | None = None) -> bytes:
    extra = f'; filename="{filename}"' if filename else ""
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n\r\n'
    return head.encode() + value + b"\r\n"


END = f"--{BOUNDARY}--\r\n".encode()


def mistakes(token: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, url, httpx keyword arguments) of requests a careless client might send."""
    bearer = {"Authorization": f"Bearer {token}"}
    multipart = {**bearer, "Content-Type": MULTIPART}
    return [
        ("POST", "/job", {"headers": multipart, "content": b"garbage"}),
        ("POST", "/job", {"headers": multipart, "content": part("script", b"pi.oms")}),
        ("POST", "/job", {"headers": {**bearer, "Content-Type": "multipart/form-data"}}),
        ("POST", "/job", {"headers": multipart, "content": part("script", b"\xff\xfe") + END}),
        (
            "POST",
            "/job",
            {"headers": multipart, "content": b"--XyZ\r\nX-Nothing: 1\r\n\r\nvalue\r\n" + END},
        ),
        (
            "POST",
            "/job",
            {
                "headers": multipart,
                "content": part("workDirectory", b"a", "a.tgz")
                + part("workDirectory", b"b", "b.tgz")
                + END,
            },
        ),
        ("POST", "/job", {"headers": multipart, "content": part("script", b"s" * 200_000) + END}),
        (
            "POST",
            f"/start?token={token}",
            {"headers": {"Content-Type": MULTIPART}, "content": b"--XyZ\r\n\r\n\r\n"},
        ),
        ("POST", f"/start?token={token}", {"data": {"script": "x" * 100_000}}),
        (
            "POST",
            "/state",
            {
                "headers": {"Content-Type": "application/x-www-form-urlencoded"},
                "content": f"token={token}&id=%FF%FE".encode(),
            },
        ),
        (
            "POST",
            "/state",
            {"headers": {"Content-Type": MULTIPART}, "content": b"--XyZ\r\nbroken"},
        ),
        (
            "POST",
            "/token",
            {
                "headers": {"Content-Type": "application/x-www-form-urlencoded"},
                "content": b"password=\xff\xfe",
            },
        ),
        ("POST", f"/state?token={token}&id=%FF", {}),
        ("POST", "/output", {"data": {"token": token, "id": "x", "offset": "-1"}}),
        ("POST", "/output", {"data": {"token": token, "id": "x", "offset": "ten"}}),
        ("GET", "/job/x/output?offset=-5", {"headers": bearer}),
        ("GET", "/job/x/output?offset=1e9", {"headers": bearer}),
        ("GET", "/job/x/output?limit=-1", {"headers": bearer}),
        ("GET", "/job?details=1&offset=-1", {"headers": bearer}),
        ("GET", "/job?details=1&limit=lots", {"headers": bearer}),
        ("PROPFIND", "/job/x/workDirectory/?last=-1", {"headers": bearer}),
        ("PROPFIND", "/job/x/workDirectory/?last=all", {"headers": bearer}),
        ("POST", "/job?tag=a=b", {"headers": bearer, "files": {"tags": (None, "{not json")}}),
        ("PUT", "/job", {"headers": bearer}),
        ("PATCH", "/state", {}),
        ("GET", "/state", {}),
    ]


def test_user_mistakes_get_a_message_not_a_traceback(
    http: httpx.Client, mole_server: ServerProcess
) -> None:
    token = new_token(http)
    before = snapshot(mole_server)
    tracebacks = mole_server.output().count("Traceback")
    for method, url, kwargs in mistakes(token):
        answer = http.request(method, url, **kwargs)
        assert 400 <= answer.status_code < 500, (method, url, answer.status_code, answer.text)
        assert answer.headers["content-type"].startswith("application/json"), (method, url)
        body = answer.json()
        assert isinstance(body["message"], str) and body["message"], (method, url)
        assert "Traceback" not in answer.text
    assert mole_server.output().count("Traceback") == tracebacks, mole_server.output()[-3000:]
    assert_nothing_left(mole_server, before)
    # And the server still serves.
    assert http.get("/service-info").status_code == 200


def test_an_upload_with_a_bad_token_is_refused_unread(
    http: httpx.Client, mole_server: ServerProcess
) -> None:
    before = snapshot(mole_server)
    files = {
        "script": (None, "pi.oms"),
        "workDirectory": ("w.tgz", tar_gz(SCRIPT, member("noise.bin", os.urandom(300_000)))),
    }
    for kwargs in (
        {"headers": {"Authorization": "Bearer nope"}},
        {"params": {"token": "nope"}},
        {},
    ):
        for route in ("/job", "/start"):
            answer = http.post(route, files=files, **kwargs)  # type: ignore[arg-type]
            assert answer.status_code == 401, (route, kwargs)
            assert answer.json() == {"message": "This service requires a valid token"}
    assert_nothing_left(mole_server, before)


def test_a_client_that_hangs_up_mid_upload_leaves_nothing(
    capped: ServerProcess, capped_http: tuple[httpx.Client, dict[str, str]]
) -> None:
    import socket

    _, auth = capped_http
    parts = urllib.parse.urlsplit(capped.url)
    before = snapshot(capped)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        head = (
            f"POST /job HTTP/1.1\r\nHost: x\r\nAuthorization: {auth['Authorization']}\r\n"
            f"Content-Type: {MULTIPART}\r\nContent-Length: 90000\r\n\r\n"
        )
        sock.sendall(head.encode() + part("workDirectory", b"z" * 20_000, "w.tgz")[:-2])
        time.sleep(0.3)
    assert_nothing_left(capped, before)
