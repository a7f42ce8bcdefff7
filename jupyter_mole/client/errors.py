"""The client's exceptions, and the one function that turns an HTTP answer into one of them.

Each exception carries the server's ``message`` (and ``stack_trace`` when the
server sent one) and the HTTP ``status``; ``str(e)`` is the message followed by
what to do, when that is obvious. A password never appears in a message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..protocol import read_error

__all__ = [
    "AuthenticationError",
    "ConnectionFailed",
    "DestinationExists",
    "MoleClientError",
    "NotFound",
    "RateLimited",
    "Refused",
    "ServerError",
    "Unsupported",
    "WaitTimeout",
    "error_from_answer",
]


class MoleClientError(Exception):
    """Anything the client could not do; the base of every exception it raises.

    ``message`` is the server's message when the server said something (else the
    client's own), ``stack_trace`` the server's stack trace if it sent one,
    ``status`` the HTTP status (None when no answer came), and ``hint`` what to do.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        stack_trace: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.stack_trace = stack_trace
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message.rstrip('. ')}. {self.hint[:1].upper()}{self.hint[1:]}."
        return self.message


class ConnectionFailed(MoleClientError):
    """No answer: ``reason`` is "unreachable", "timeout", "tls", "fingerprint", or
    "plain-http" (an https:// URL, and the server speaks plain HTTP)."""

    def __init__(self, message: str, *, reason: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


class AuthenticationError(MoleClientError):
    """The server refused the password or the token (401 or 403)."""


class RateLimited(AuthenticationError):
    """Too many wrong passwords (429): try again after ``retry_after`` seconds."""

    def __init__(self, message: str, *, status: int = 429, retry_after: float | None) -> None:
        hint = f"try again in {retry_after:g} s" if retry_after is not None else None
        super().__init__(message, status=status, hint=hint)
        self.retry_after = retry_after


class NotFound(MoleClientError):
    """No such execution, or no such file in its work directory (404, or OpenMOLE's 417)."""


class Refused(MoleClientError):
    """The server understood the request and refused it (417 and other 4xx).

    A missing script, a script that fails to load (``stack_trace`` then says
    where), an archive it will not unpack, an upload too large.
    """


class ServerError(MoleClientError):
    """The server failed (5xx); its log says why."""


class Unsupported(MoleClientError):
    """This server does not offer what was asked (a jupyter-mole extension on OpenMOLE)."""


class DestinationExists(MoleClientError):
    """A download would replace an existing file or folder: pass ``overwrite=True``."""


class WaitTimeout(MoleClientError, TimeoutError):
    """``wait`` gave up before the execution ended; the execution goes on."""


NOT_FOUND_MESSAGES = ("Execution not found", "File not found")


def _message(body: bytes) -> tuple[str | None, str | None]:
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return (text[:500] or None), None
    error = read_error(parsed)
    if error is None:
        return None, None
    return error.message, error.stack_trace


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        return float(headers.get("retry-after", ""))
    except ValueError:
        return None


def error_from_answer(
    status: int, headers: Mapping[str, str], body: bytes, what: str
) -> MoleClientError:
    """The exception for an error answer (``status`` >= 400) to ``what`` (e.g. ``GET /job``)."""
    message, trace = _message(body)
    text = message or f"{what} answered HTTP {status}"
    if status == 429:
        return RateLimited(text, status=status, retry_after=_retry_after(headers))
    if status in (401, 403):
        hint = (
            "check the password (password=, password_file=, MOLE_PASSWORD or MOLE_PASSWORD_FILE)"
            if status == 403
            else "give the server's password (password=, MOLE_PASSWORD or MOLE_PASSWORD_FILE)"
        )
        return AuthenticationError(text, status=status, stack_trace=trace, hint=hint)
    if status == 404 or (status == 417 and message in NOT_FOUND_MESSAGES):
        return NotFound(text, status=status, stack_trace=trace)
    if 400 <= status < 500:
        return Refused(text, status=status, stack_trace=trace)
    if status >= 500:
        return ServerError(text, status=status, stack_trace=trace)
    return MoleClientError(text, status=status, stack_trace=trace)
