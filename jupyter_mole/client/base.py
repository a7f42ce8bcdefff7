"""What the sync and async clients share: configuration, the core, and the run loop's contract."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from .. import __version__
from .core import Call, Reply, Session, connection_failed
from .errors import ConnectionFailed
from .ops import Operations
from .tls import answers_plain_http, ssl_context

__all__ = ["DEFAULT_TIMEOUT", "STALLED_HANDSHAKE", "ClientBase", "Verify", "read_password_file"]

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
STALLED_HANDSHAKE = 1.0
"""Seconds the first connection to an https:// URL may take before the client asks whether the
server speaks plain HTTP (one that does never answers the TLS greeting: the handshake would
only end at the connect timeout). If it does not, the request is made again, with all the time."""
Verify = bool | str | os.PathLike[str] | ssl.SSLContext
C = TypeVar("C", bound="ClientBase")


def read_password_file(path: str | os.PathLike[str]) -> str:
    """The first line of ``path``, stripped, exactly as ``jupyter-mole serve --password-file`` reads it.

    Both sides must read the same file the same way: a trailing space or a
    Windows line end would otherwise make the one password two.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot read the password file {path}: {e.strerror}") from None
    password = text.splitlines()[0].strip() if text else ""
    if not password:
        raise ValueError(f"the password file {path} is empty")
    return password


class ClientBase:
    """Configuration and state shared by :class:`MoleClient` and :class:`AsyncMoleClient`.

    ``kind`` is None until the first call (or :meth:`detect`) has found out what
    the server is, unless ``api`` forced it: ``"auto"`` (detect), ``"job"``
    (OpenMOLE's /job API) or ``"token"`` (OpenMOLE's token API).
    """

    def __init__(
        self,
        url: str,
        password: str | None = None,
        *,
        password_file: str | os.PathLike[str] | None = None,
        verify: Verify = True,
        fingerprint: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        api: str = "auto",
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        if fingerprint and parts.scheme != "https":
            raise ValueError("a certificate fingerprint pins an https:// server; this URL is http")
        if password is not None and password_file is not None:
            raise ValueError("give password or password_file, not both")
        if password_file is not None:
            password = read_password_file(password_file)
        self.url = url.rstrip("/")
        self._ops = Operations(Session(self.url, password, api))
        # Until an https:// server has answered once (or was asked): connect quickly, or ask.
        self._suspect_plain_http = parts.scheme == "https"
        self._http_options: dict[str, Any] = {
            "base_url": self.url,
            "verify": ssl_context(verify, fingerprint),
            "timeout": timeout,
            "headers": {"User-Agent": f"jupyter-mole/{__version__}"},
            "follow_redirects": False,
        }

    @classmethod
    def from_environment(
        cls: type[C], environ: Mapping[str, str] | None = None, **options: Any
    ) -> C:
        """A client for ``MOLE_URL`` with ``MOLE_PASSWORD`` or ``MOLE_PASSWORD_FILE``,
        ``MOLE_FINGERPRINT`` and ``MOLE_CA_FILE``; keyword ``options`` take precedence."""
        env = os.environ if environ is None else environ
        url = options.pop("url", None) or env.get("MOLE_URL")
        if not url:
            raise ValueError(
                "no server address: set MOLE_URL (e.g. https://127.0.0.1:8443) or pass url="
            )
        if "password" not in options and "password_file" not in options:
            if env.get("MOLE_PASSWORD"):
                options["password"] = env["MOLE_PASSWORD"]
            elif env.get("MOLE_PASSWORD_FILE"):
                options["password_file"] = env["MOLE_PASSWORD_FILE"]
        if "fingerprint" not in options and env.get("MOLE_FINGERPRINT"):
            options["fingerprint"] = env["MOLE_FINGERPRINT"]
        if "verify" not in options and env.get("MOLE_CA_FILE"):
            options["verify"] = env["MOLE_CA_FILE"]
        return cls(url, **options)

    @property
    def kind(self) -> str | None:
        """``"jupyter-mole"``, ``"openmole-job"`` or ``"openmole-token"``; None until detected."""
        return self._ops.session.kind

    @property
    def token(self) -> str | None:
        """The current token (None until bought); a 401 makes the client buy a new one."""
        return self._ops.session.token

    @token.setter
    def token(self, value: str | None) -> None:
        self._ops.session.token = value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, kind={self.kind!r})"

    # -- for the drivers ----------------------------------------------------------------
    def _request_of(self, http: httpx.Client | httpx.AsyncClient, call: Call) -> httpx.Request:
        timeout = http.timeout
        if self._suspect_plain_http:
            connect = timeout.connect
            quick = STALLED_HANDSHAKE if connect is None else min(connect, STALLED_HANDSHAKE)
            timeout = httpx.Timeout(
                connect=quick, read=timeout.read, write=timeout.write, pool=timeout.pool
            )
        return http.build_request(
            call.method,
            call.path,
            params=call.params,
            data=call.data,
            files=call.files,
            headers=call.headers,
            timeout=timeout,
        )

    def _answered(self) -> None:
        """The server answered: whatever it speaks, it is what the URL says."""
        self._suspect_plain_http = False

    def _raise_or_retry(self, error: httpx.TransportError) -> None:
        """Raise the client's exception for ``error``, or return: make the request again.

        It returns only when the quick first connection to an https:// URL timed out
        and the server does not speak plain HTTP (then it says so at once, instead of
        the timeout): the next try has the full connect timeout. Blocking (a short TCP
        exchange): the async driver runs it in a thread.
        """
        if not (self._suspect_plain_http and isinstance(error, httpx.ConnectTimeout)):
            raise self._failed(error) from error
        self._suspect_plain_http = False
        if answers_plain_http(self.url):
            plain = urlunsplit(urlsplit(self.url)._replace(scheme="http"))
            raise ConnectionFailed(
                f"the server at {self.url} answered plain HTTP: use {plain}", reason="plain-http"
            ) from error

    def _failed(self, error: httpx.TransportError) -> Exception:
        return connection_failed(error, self.url)

    @staticmethod
    def _reply(response: httpx.Response, content: bytes) -> Reply:
        return Reply(response.status_code, response.headers, content)
