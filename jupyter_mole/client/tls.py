"""TLS for the client: CA files, pinning a self-signed server by its certificate's fingerprint,
and telling a plain HTTP server behind an https:// URL.

A pinned context does not check the certificate chain nor the host name (a
self-signed certificate has neither to offer); instead, right after the TLS
handshake and before a single byte of HTTP is sent, it compares the SHA-256 of
the server's DER certificate with the pinned fingerprint, and breaks the
connection on a mismatch. It does so in the handshake of both kinds of TLS
object Python makes: the ``SSLSocket`` of synchronous httpx and the
``SSLObject`` that asynchronous httpx (through anyio) drives.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import ssl
from typing import Any, TypeVar
from urllib.parse import urlsplit

__all__ = [
    "FingerprintMismatch",
    "answers_plain_http",
    "cause_of",
    "format_fingerprint",
    "normalize_fingerprint",
    "pinned_context",
    "ssl_context",
]

_HEX = re.compile(r"[0-9a-f]{64}")


class FingerprintMismatch(ssl.SSLCertVerificationError):
    """The server's certificate is not the pinned one."""

    def __init__(self, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            1,
            f"the server's certificate has SHA-256 fingerprint {actual}, not the pinned {expected}",
        )


def normalize_fingerprint(text: str) -> str:
    """``AB:CD:...`` (or plain hex, any case, with an optional ``sha256:`` prefix) as 64 hex digits."""
    value = text.strip().lower()
    value = value.removeprefix("sha256:").removeprefix("sha256 ")
    value = re.sub(r"[\s:]", "", value)
    if not _HEX.fullmatch(value):
        raise ValueError(
            "a certificate fingerprint is 32 hexadecimal pairs like 'AB:CD:...' "
            "(the SHA-256 fingerprint `jupyter-mole serve` prints)"
        )
    return value


def format_fingerprint(hex_digest: str) -> str:
    """64 hex digits as ``AB:CD:...``, the way the server prints them."""
    return ":".join(hex_digest[i : i + 2] for i in range(0, len(hex_digest), 2)).upper()


def _check(tls: Any, expected: str) -> None:
    der = tls.getpeercert(binary_form=True)
    actual = hashlib.sha256(der or b"").hexdigest()
    if actual != expected:
        raise FingerprintMismatch(format_fingerprint(expected), format_fingerprint(actual))


def _pinned_classes(expected: str) -> tuple[type[ssl.SSLSocket], type[ssl.SSLObject]]:
    class PinnedSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            super().do_handshake(block)
            _check(self, expected)

    class PinnedObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            _check(self, expected)

    return PinnedSocket, PinnedObject


def pinned_context(fingerprint: str) -> ssl.SSLContext:
    """A client context that accepts exactly the certificate with this SHA-256 fingerprint."""
    expected = normalize_fingerprint(fingerprint)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the pin replaces the chain: checked after the handshake
    context.sslsocket_class, context.sslobject_class = _pinned_classes(expected)
    return context


def ssl_context(
    verify: bool | str | os.PathLike[str] | ssl.SSLContext = True, fingerprint: str | None = None
) -> ssl.SSLContext | bool:
    """What httpx's ``verify`` takes: the pinned context, a context for a CA file, or as given."""
    if fingerprint:
        return pinned_context(fingerprint)
    if isinstance(verify, str | os.PathLike):
        return ssl.create_default_context(cafile=os.fspath(verify))
    return verify


def answers_plain_http(url: str, timeout: float = 2.0) -> bool:
    """Whether the server of this (https://) URL answers a plain HTTP request.

    Asked when a TLS handshake stalls: a plain HTTP server reads the TLS
    greeting as the start of a request and waits for the rest of its headers
    (tornado, for an hour), so the handshake only ends when the client gives
    up. Asked in plain HTTP, the same server answers at once (``HTTP/1.x ...``),
    while a TLS server refuses the request or closes.
    """
    parts = urlsplit(url)
    if parts.hostname is None:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    request = f"HEAD / HTTP/1.0\r\nHost: {parts.netloc}\r\n\r\n".encode()
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout) as probe:
            probe.sendall(request)
            return probe.recv(5) == b"HTTP/"
    except OSError:
        return False


E = TypeVar("E", bound=BaseException)


def cause_of(error: BaseException, kind: type[E]) -> E | None:
    """The exception of type ``kind`` behind ``error`` (itself, or in its chain of causes)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
