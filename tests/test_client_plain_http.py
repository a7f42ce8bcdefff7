"""An https:// URL for a plain HTTP server fails in about a second, saying so.

A plain HTTP server (tornado: ours with ``--http``, the embedded one) reads the
TLS greeting as the start of a request and waits for the rest of its headers,
so without a check the handshake would only end at the connect timeout (10 s),
with a vague message. A TLS server that is merely slow to shake hands must not
be taken for one: the client asks, and then waits for it with all its time.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from jupyter_mole.client import AsyncMoleClient, ConnectionFailed, MoleClient
from jupyter_mole.client.base import STALLED_HANDSHAKE
from tests.servers import ServerProcess


@pytest.fixture
def plain(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server(https=False, password=None)


def test_https_to_a_plain_http_server_fails_fast_and_says_so(plain: ServerProcess) -> None:
    wrong = plain.url.replace("http:", "https:")
    started = time.monotonic()
    with MoleClient(wrong) as client, pytest.raises(ConnectionFailed) as caught:
        client.list()  # the default timeouts: 10 s to connect
    assert time.monotonic() - started < 5
    assert caught.value.reason == "plain-http"
    assert str(caught.value) == f"the server at {wrong} answered plain HTTP: use {plain.url}"
    with MoleClient(plain.url) as client:  # the advice works
        assert client.list() == []


def test_the_async_client_fails_as_fast(plain: ServerProcess) -> None:
    wrong = plain.url.replace("http:", "https:")

    async def ask() -> ConnectionFailed:
        async with AsyncMoleClient(wrong) as client:
            with pytest.raises(ConnectionFailed) as caught:
                await client.list()
            return caught.value

    started = time.monotonic()
    error = asyncio.run(ask())
    assert time.monotonic() - started < 5
    assert error.reason == "plain-http" and f"use {plain.url}" in str(error)


@contextlib.contextmanager
def slow_proxy(target: str, delay: float) -> Iterator[str]:
    """A TCP relay to ``target`` (host:port) that holds each connection ``delay`` s first:
    a TLS server slow to shake hands. Yields its own host:port."""
    host, port = target.rsplit(":", 1)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def relay(client: socket.socket) -> None:
        time.sleep(delay)
        with client, socket.create_connection((host, int(port))) as server:
            back = threading.Thread(target=pipe, args=(server, client), daemon=True)
            back.start()
            pipe(client, server)
            back.join(30)

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=relay, args=(client,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        acceptor.join(5)
        listener.close()


def test_a_slow_tls_server_is_not_taken_for_plain_http(mole_server: ServerProcess) -> None:
    delay = STALLED_HANDSHAKE + 0.5
    with slow_proxy(mole_server.url.removeprefix("https://"), delay) as address:
        url = f"https://{address}"
        started = time.monotonic()
        with MoleClient(url, mole_server.password, fingerprint=mole_server.fingerprint) as client:
            assert isinstance(client.list(), list)
            elapsed = time.monotonic() - started
            assert elapsed > delay  # it did stall, and the client waited for it
            again = time.monotonic()
            assert isinstance(client.list(), list)  # kept alive: no new handshake, no check
            assert time.monotonic() - again < delay
