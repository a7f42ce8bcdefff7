"""The sans-IO core: what to ask a server and what its answers mean, written once.

Every client operation is a generator. It yields *instructions* and is sent
back their results; it never touches a socket:

- :class:`Call`: an HTTP request to make; the driver sends back a :class:`Reply`;
- :class:`Sleep`: wait this many seconds (``wait`` polling);
- :class:`Blocking`: run this function off the event loop (packing, unpacking).

``MoleClient`` drives these generators with ``httpx.Client`` and ``time.sleep``;
``AsyncMoleClient`` with ``httpx.AsyncClient`` and ``anyio``. Detection of the
server's kind, tokens, their renewal and the mapping of answers to exceptions
all live here, in :class:`Session`; the operations themselves in ``ops.py``.
"""

from __future__ import annotations

import dataclasses
import json
import ssl
from collections.abc import Callable, Generator, Mapping
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

import httpx

from ..protocol import ServiceInfo
from .errors import (
    AuthenticationError,
    ConnectionFailed,
    MoleClientError,
    Unsupported,
    error_from_answer,
)
from .tls import FingerprintMismatch, cause_of

__all__ = [
    "JOB",
    "KINDS",
    "MOLE",
    "TOKEN",
    "Blocking",
    "Call",
    "Instruction",
    "Op",
    "Reply",
    "Session",
    "Sleep",
    "connection_failed",
]

MOLE, JOB, TOKEN = "jupyter-mole", "openmole-job", "openmole-token"
KINDS = (MOLE, JOB, TOKEN)
FORCED = {"auto": None, "job": JOB, "token": TOKEN, "mole": MOLE}
T = TypeVar("T")


@dataclasses.dataclass
class Call:
    """An HTTP request to make. ``path`` is relative to the server's URL and starts with ``/``.

    ``data`` are form fields (multipart when ``files`` are given). When ``sink``
    is set, a successful answer's body is written to it as it arrives, and the
    :class:`Reply` comes back with an empty ``content``.
    """

    method: str
    path: str
    params: dict[str, str] | None = None
    data: dict[str, str] | None = dataclasses.field(default=None, repr=False)  # may hold a password
    files: dict[str, tuple[str, Any, str]] | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)
    sink: BinaryIO | None = None

    @property
    def what(self) -> str:
        return f"{self.method} {self.path}"


@dataclasses.dataclass
class Reply:
    status: int
    headers: Mapping[str, str]  # case-insensitive (httpx.Headers)
    content: bytes = b""

    def json(self) -> Any:
        try:
            return json.loads(self.content)
        except ValueError:
            return None

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


@dataclasses.dataclass
class Sleep:
    seconds: float


@dataclasses.dataclass
class Blocking:
    fn: Callable[[], Any]


Instruction = Call | Sleep | Blocking
Op = Generator[Instruction, Any, T]


class Session:
    """One server: its kind (detected once), its token (bought lazily, renewed on a 401)."""

    def __init__(self, url: str, password: str | None, api: str = "auto") -> None:
        if api not in FORCED:
            raise ValueError(f"api must be one of {', '.join(FORCED)}, not {api!r}")
        self.url = url
        self._password = password
        self.kind: str | None = FORCED[api]
        self.token: str | None = None
        self.info: ServiceInfo | None = None
        self.token_api = True  # False: a /job server without /token (OpenMOLE has no auth)

    def __repr__(self) -> str:  # never the password
        return f"Session({self.url!r}, kind={self.kind!r})"

    # -- what the server is ---------------------------------------------------------
    def detect(self) -> Op[str]:
        """The server's kind: /service-info (ours), else GET /job (OpenMOLE), else POST /token."""
        if self.kind is not None:
            return self.kind
        answers = []
        reply = yield Call("GET", "/service-info")
        body = reply.json()
        if reply.status == 200 and isinstance(body, dict) and "generations" in body:
            self.info = ServiceInfo.from_json(body)
            self.kind = MOLE if "job" in self.info.generations else TOKEN
            return self.kind
        answers.append(f"GET /service-info: {reply.status}")
        reply = yield Call("GET", "/job")
        if (reply.status == 200 and isinstance(reply.json(), list)) or reply.status == 401:
            self.kind = JOB
            return self.kind
        answers.append(f"GET /job: {reply.status}")
        reply = yield self._token_call()
        body = reply.json()
        if reply.status in (200, 202) and isinstance(body, dict) and "token" in body:
            self.kind, self.token = TOKEN, str(body["token"])
            return self.kind
        if reply.status in (403, 417, 429) and isinstance(body, dict) and "message" in body:
            self.kind = TOKEN
            if reply.status != 417:  # 417: no password sent; calls will say one is needed
                raise error_from_answer(reply.status, reply.headers, reply.content, "POST /token")
            return self.kind
        answers.append(f"POST /token: {reply.status}")
        raise Unsupported(
            f"{self.url} does not answer OpenMOLE's REST API ({'; '.join(answers)})",
            hint="check the URL: it is the address `jupyter-mole serve` or `openmole --rest` prints",
        )

    @property
    def wants_token(self) -> bool:
        if self._password is None or not self.token_api:
            return False
        return self.info is None or self.info.auth != "none"

    # -- tokens ---------------------------------------------------------------------
    def _token_call(self) -> Call:
        return Call("POST", "/token", data={"password": self._password} if self._password else {})

    def login(self) -> Op[None]:
        """Buy a token with the password (POST /token)."""
        reply = yield self._token_call()
        body = reply.json()
        if reply.status in (200, 202) and isinstance(body, dict) and "token" in body:
            self.token = str(body["token"])
            return
        if reply.status in (404, 405) and self.kind == JOB:
            self.token_api = False  # OpenMOLE's /job API has no authentication at all
            return
        raise error_from_answer(reply.status, reply.headers, reply.content, "POST /token")

    def _authorize(self, call: Call) -> Call:
        if self.token is None:
            return call
        if self.kind == TOKEN:
            return dataclasses.replace(call, data={**(call.data or {}), "token": self.token})
        return dataclasses.replace(
            call, headers={**call.headers, "Authorization": f"Bearer {self.token}"}
        )

    def request(self, call: Call, auth: bool = True) -> Op[Reply]:
        """Send ``call`` with the token (bought first if needed, renewed once on a 401)."""
        yield from self.detect()
        fresh = False
        if auth and self.wants_token and self.token is None:
            yield from self.login()
            fresh = True
        reply: Reply = yield self._authorize(call) if auth else call
        if reply.status == 401 and auth and self.wants_token and not fresh:
            self.token = None
            yield from self.login()
            reply = yield self._authorize(call)
        if reply.status == 401:
            error = error_from_answer(reply.status, reply.headers, reply.content, call.what)
            if self._password is not None:
                error.hint = "the server refused a token just bought with the password"
            raise AuthenticationError(error.message, status=401, hint=error.hint)
        if reply.status >= 400:
            raise error_from_answer(reply.status, reply.headers, reply.content, call.what)
        return reply


def connection_failed(error: httpx.TransportError, url: str) -> MoleClientError:
    """A transport error as the client's exception, saying which kind of failure it was."""
    host = urlsplit(url).netloc or url
    mismatch = cause_of(error, FingerprintMismatch)
    if mismatch is not None:
        return ConnectionFailed(
            f"refused {host}: {mismatch.strerror}",
            reason="fingerprint",
            hint="nothing was sent. If the server's certificate was renewed, pin its new "
            "fingerprint (`jupyter-mole serve` prints it); otherwise someone may be "
            "intercepting the connection",
        )
    if isinstance(error, httpx.TimeoutException):
        slow = "the server may be overloaded; a larger timeout= may help"
        if isinstance(error, httpx.ConnectTimeout) and url.startswith("https:"):
            slow = "if the server speaks plain HTTP, use an http:// URL; else " + slow
        return ConnectionFailed(
            f"{host} did not answer in time ({type(error).__name__})", reason="timeout", hint=slow
        )
    tls = cause_of(error, ssl.SSLError)
    if tls is not None:
        detail = getattr(tls, "verify_message", None)
        reason = f"certificate verify failed: {detail}" if detail else tls.reason or str(tls)
        hint = None
        if "CERTIFICATE_VERIFY_FAILED" in str(tls):
            hint = (
                "for a server with a self-signed certificate, pin its fingerprint "
                "(fingerprint=, --fingerprint or MOLE_FINGERPRINT) or trust its certificate "
                "(verify=<cert.pem>, --ca-file or MOLE_CA_FILE)"
            )
        elif "WRONG_VERSION_NUMBER" in str(tls) or "record layer failure" in str(tls):
            hint = "is this a plain HTTP server? then use an http:// URL"
        return ConnectionFailed(f"TLS with {host} failed: {reason}", reason="tls", hint=hint)
    return ConnectionFailed(
        f"cannot reach {url}: {error or type(error).__name__}",
        reason="unreachable",
        hint="is the server running at this address? (`jupyter-mole serve` starts one)",
    )
