"""The client connecting to servers: TLS pinning and CA files, unreachable and non-OpenMOLE servers.

Split out of ``test_client.py`` (which keeps the flows, tokens and executions)
to keep each module under 600 lines; ``client_for`` is in ``tests/clients.py``.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_mole.client import (
    AsyncMoleClient,
    ConnectionFailed,
    MoleClient,
    Unsupported,
)
from tests.clients import client_for
from tests.servers import PASSWORD, ServerProcess

WRONG_FINGERPRINT = ":".join(["AB"] * 32)


# -- TLS ----------------------------------------------------------------------------------
class TLSListener:
    """A bare TLS server on loopback with a given certificate that records what it receives."""

    def __init__(self, certfile: Path, keyfile: Path) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(certfile, keyfile)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.sock.getsockname()[1]}"
        self.received = b""
        self.handshakes = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(30)
        try:
            raw, _ = self.sock.accept()
        except OSError:
            return
        try:
            with self.context.wrap_socket(raw, server_side=True) as tls:
                self.handshakes += 1
                tls.settimeout(10)
                while chunk := tls.recv(65536):
                    self.received += chunk
                    if b"\r\n\r\n" in self.received:
                        break
        except (OSError, ssl.SSLError):
            pass

    def close(self) -> None:
        self.sock.close()
        self.thread.join(30)


@pytest.fixture
def listener(mole_server: ServerProcess) -> Iterator[TLSListener]:
    tls = mole_server.state_dir / "tls"
    server = TLSListener(tls / "cert.pem", tls / "key.pem")
    yield server
    server.close()


def test_wrong_fingerprint_sends_nothing(listener: TLSListener) -> None:
    with (
        MoleClient(listener.url, PASSWORD, fingerprint=WRONG_FINGERPRINT) as client,
        pytest.raises(ConnectionFailed) as caught,
    ):
        client.start(".", "pi.oms")
    listener.close()
    assert caught.value.reason == "fingerprint" and "pinned" in str(caught.value)
    assert listener.handshakes == 1 and listener.received == b""


def test_async_wrong_fingerprint_sends_nothing(listener: TLSListener) -> None:
    async def connect() -> ConnectionFailed:
        async with AsyncMoleClient(listener.url, PASSWORD, fingerprint=WRONG_FINGERPRINT) as client:
            with pytest.raises(ConnectionFailed) as caught:
                await client.list()
            return caught.value

    error = asyncio.run(connect())
    listener.close()
    assert error.reason == "fingerprint"
    assert listener.received == b""  # not even the handshake's last flight: the check comes first


def test_right_fingerprint_reaches_the_listener(
    listener: TLSListener, mole_server: ServerProcess
) -> None:
    """The listener does record requests: the two tests above could fail."""
    with (
        MoleClient(listener.url, fingerprint=mole_server.fingerprint) as client,
        pytest.raises(ConnectionFailed),
    ):  # it hangs up without answering
        client.list()
    listener.close()
    assert listener.received.startswith(b"GET /service-info HTTP/1.1")


def test_wrong_fingerprint_against_the_server(mole_server: ServerProcess) -> None:
    with (
        client_for(mole_server, fingerprint=WRONG_FINGERPRINT.lower().replace(":", "")) as client,
        pytest.raises(ConnectionFailed) as caught,
    ):
        client.list()
    assert caught.value.reason == "fingerprint"
    assert mole_server.fingerprint in str(caught.value)


def test_ca_file_and_default_verification(mole_server: ServerProcess) -> None:
    with client_for(mole_server, fingerprint=None, verify=str(mole_server.certfile)) as client:
        assert isinstance(client.list(), list)
    system_cas = client_for(mole_server, fingerprint=None)
    with system_cas as client, pytest.raises(ConnectionFailed) as caught:
        client.list()
    assert caught.value.reason == "tls" and "fingerprint" in str(caught.value)
    with pytest.raises(ValueError, match="fingerprint"):
        MoleClient("http://127.0.0.1:1", fingerprint=WRONG_FINGERPRINT)
    with pytest.raises(ValueError, match="32 hexadecimal"):
        MoleClient("https://127.0.0.1:1", fingerprint="AB:CD")


def test_unreachable_server() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    with (
        MoleClient(f"http://127.0.0.1:{port}") as client,
        pytest.raises(ConnectionFailed) as caught,
    ):
        client.list()
    assert caught.value.reason == "unreachable" and str(port) in str(caught.value)


def test_not_an_openmole_server(tmp_path: Path) -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = MoleClient(f"http://127.0.0.1:{server.server_port}")
        with client, pytest.raises(Unsupported, match="does not answer OpenMOLE") as caught:
            client.list()
        assert "GET /service-info: 404" in str(caught.value) and "POST /token: 501" in str(
            caught.value
        )
    finally:
        server.shutdown()
        server.server_close()
