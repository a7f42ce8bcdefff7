"""The client of OpenMOLE's REST API: our server, or OpenMOLE itself, either generation.

``MoleClient`` (blocking) and ``AsyncMoleClient`` (awaited) have the same
constructor and the same methods; both drive one sans-IO core (``core``,
``ops``), so requests are built and answers read in one place::

    with MoleClient("https://127.0.0.1:8443", password_file="pw.txt",
                    fingerprint="AB:CD:...") as mole:
        execution = mole.start("my-model/", "pi.oms", progress=print)
        state = mole.wait(execution)
        text, offset = mole.output(execution)
        mole.download(execution, "result.csv", dest="result.csv")

What the server is, is found out once, at the first call: ``GET /service-info``
answers on our server (``kind`` "jupyter-mole": the /job routes and our
extensions); else ``GET /job`` answering a JSON list means OpenMOLE's /job API
("openmole-job"); else ``POST /token`` means OpenMOLE's token API
("openmole-token"). ``api="job"`` or ``api="token"`` skips the detection.

A token is bought with the password at the first call that needs one, sent as
``Authorization: Bearer`` on /job routes and as the ``token`` form field on the
token API, and bought again, once per call, when the server answers 401.

Methods: ``detect``, ``service_info``, ``start``, ``state``, ``output`` (from an
offset), ``download`` (a file or a folder; never replaces an existing
destination unless ``overwrite=True``), ``list`` (ids, or ``ExecutionInfo`` with
``details=True``), ``wait``, ``remove``, and with our server only (else
:class:`Unsupported`): ``info``, ``errors`` (the whole error log), ``cancel``
(stop, keep the files); ``listing`` (PROPFIND) needs a /job server.

Every exception the client raises on purpose is one of these::

    MoleClientError                 .message (the server's), .stack_trace, .status, .hint
     +-- ConnectionFailed           no answer; .reason: "unreachable", "timeout", "tls",
     |                              "fingerprint" (the certificate is not the pinned one:
     |                              nothing was sent), "plain-http" (an https:// URL for a
     |                              plain HTTP server: found out in about a second)
     +-- AuthenticationError        401 / 403: wrong password, token refused after renewal
     |    +-- RateLimited           429: too many wrong passwords; .retry_after seconds
     +-- NotFound                   404, or 417 "Execution not found" (token API)
     +-- Refused                    417 and other 4xx: missing script, script fails to load
     |                              (.stack_trace says where), bad archive, too large
     +-- ServerError                5xx
     +-- Unsupported                the server does not offer this (an extension on OpenMOLE)
     +-- DestinationExists          a download would replace a file or folder
     +-- WaitTimeout                wait(timeout=...) gave up; also a TimeoutError

``str(error)`` is the server's message, then what to do when that is obvious.
Local problems keep their usual types: a missing folder or script is a
``FileNotFoundError``, a folder too large to pack an ``archive.ArchiveError``,
a bad argument a ``ValueError``. Passwords never appear in messages or reprs.
"""

from __future__ import annotations

from .aio import AsyncMoleClient
from .core import JOB, KINDS, MOLE, TOKEN
from .errors import (
    AuthenticationError,
    ConnectionFailed,
    DestinationExists,
    MoleClientError,
    NotFound,
    RateLimited,
    Refused,
    ServerError,
    Unsupported,
    WaitTimeout,
)
from .ops import LoggedError
from .sync import MoleClient
from .tls import normalize_fingerprint

__all__ = [
    "JOB",
    "KINDS",
    "MOLE",
    "TOKEN",
    "AsyncMoleClient",
    "AuthenticationError",
    "ConnectionFailed",
    "DestinationExists",
    "LoggedError",
    "MoleClient",
    "MoleClientError",
    "NotFound",
    "RateLimited",
    "Refused",
    "ServerError",
    "Unsupported",
    "WaitTimeout",
    "normalize_fingerprint",
]
