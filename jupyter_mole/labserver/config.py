"""The extension's configuration: ``c.Mole...`` traitlets, each with its help text.

Unset ``url`` means the embedded server. A configuration that cannot work
fails at start with a message naming the trait, as Jupyter users expect.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit

from traitlets import Bool, Float, Int, TraitError, Unicode, validate
from traitlets.config import Configurable

__all__ = ["BACKEND_ONLY", "EMBEDDED_ONLY", "Mole", "read_password_file"]

BACKEND_ONLY = ("password", "password_file", "fingerprint", "ca_file", "verify_tls", "api")
"""The traits that say how to reach the server at ``url``: without it, nothing reads them."""
EMBEDDED_ONLY = ("state_directory", "embedded_workers")
"""The traits that say how to start the embedded server: with a ``url``, none is started."""


class Mole(Configurable):
    """jupyter-mole's Jupyter server extension (``c.Mole.url = ...`` in jupyter_server_config.py)."""

    url = Unicode(
        None,
        allow_none=True,
        config=True,
        help="The OpenMOLE REST server to use (ours or OpenMOLE, https://host:8443). "
        "Unset: start the embedded server on this machine and use it.",
    )
    password = Unicode(
        None, allow_none=True, config=True, help="The password of the server at `url`."
    )
    password_file = Unicode(
        None,
        allow_none=True,
        config=True,
        help="A file whose first line is the password of the server at `url` (better than "
        "`password` in a config file).",
    )
    ca_file = Unicode(
        None,
        allow_none=True,
        config=True,
        help="A CA bundle (PEM) to verify the server's certificate with.",
    )
    fingerprint = Unicode(
        None,
        allow_none=True,
        config=True,
        help="The SHA-256 fingerprint of the server's certificate (AB:CD:...), pinned: a "
        "self-signed server is accepted if, and only if, its certificate has it.",
    )
    verify_tls = Bool(
        True,
        config=True,
        help="Verify the server's TLS certificate. Turning it off (for a self-signed server "
        "without a pinned fingerprint) logs a warning at every start.",
    )
    api = Unicode(
        "auto",
        config=True,
        help="Which API generation to speak to `url`: auto (detect), job (OpenMOLE's /job "
        "API) or token (OpenMOLE's token API).",
    )
    state_directory = Unicode(
        None,
        allow_none=True,
        config=True,
        help="Where the embedded server keeps its executions (default: Jupyter's data "
        "directory, `mole/` in it).",
    )
    embedded_workers = Int(
        0,
        config=True,
        help="Worker processes of the embedded server's local Dask cluster (0: one per core).",
    )
    poll_interval = Float(
        1.0,
        config=True,
        help="Seconds between two queries of one execution's state to the backend, whatever "
        "the number of browser tabs and widgets asking.",
    )

    @validate("url")
    def _check_url(self, proposal: dict) -> str | None:
        value = proposal["value"]
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise TraitError(f"Mole.url must be an http:// or https:// address, got {value!r}")
        if "@" in parts.netloc:  # not echoed: it may hold the password
            # The url goes to the connection file's readers and to the browser (the sidebar shows
            # where the backend is); a password must go where only the extension reads it.
            raise TraitError(
                "Mole.url must not hold a user name or password (user:password@host): "
                "give the password with Mole.password or, better, Mole.password_file"
            )
        return value.rstrip("/")

    @validate("poll_interval")
    def _check_poll(self, proposal: dict) -> float:
        value = proposal["value"]
        if not 0.05 <= value <= 3600:
            raise TraitError(
                f"Mole.poll_interval must be between 0.05 and 3600 seconds, got {value}"
            )
        return value

    @validate("api")
    def _check_api(self, proposal: dict) -> str:
        if proposal["value"] not in ("auto", "job", "token"):
            raise TraitError(f"Mole.api must be auto, job or token, got {proposal['value']!r}")
        return proposal["value"]

    @validate("embedded_workers")
    def _check_workers(self, proposal: dict) -> int:
        if proposal["value"] < 0:
            raise TraitError(f"Mole.embedded_workers must be 0 or more, got {proposal['value']}")
        return proposal["value"]

    @validate("fingerprint")
    def _check_fingerprint(self, proposal: dict) -> str | None:
        value = proposal["value"]
        if not value:
            return None
        from ..client.tls import normalize_fingerprint

        try:
            normalize_fingerprint(value)
        except ValueError as e:
            raise TraitError(f"Mole.fingerprint: {e}") from None
        return value

    @validate("password_file", "ca_file")
    def _check_file(self, proposal: dict) -> str | None:
        value = proposal["value"]
        if value and not Path(value).expanduser().is_file():
            raise TraitError(f"Mole.{proposal['trait'].name}: there is no file {value}")
        if value and proposal["trait"].name == "password_file":
            read_password_file(value)  # an empty one fails now, not at the first request
        return value

    @validate("state_directory")
    def _check_state_directory(self, proposal: dict) -> str | None:
        """A folder, or a path where one can be made: a file in the way is a configuration
        error (named here), not a server that mysteriously does not start."""
        value = proposal["value"]
        if not value:
            return None
        path = Path(value).expanduser()
        for existing in (path, *path.parents):
            if existing.exists():
                if existing == path and not path.is_dir():
                    raise TraitError(f"Mole.state_directory: {value} exists and is not a folder")
                if not existing.is_dir():
                    raise TraitError(
                        f"Mole.state_directory: {value} cannot be made: {existing} is a file"
                    )
                break
        return value

    def check(self, log: logging.Logger | None = None) -> None:
        """What no single trait can say: combinations that cannot work, and settings ignored.

        Settings that only the other kind of backend reads are a warning, not an error: a
        site-wide config may set the embedded server's state directory while a user's config
        points at a remote server, and that works; but whoever set them should learn that
        they do nothing (a password without a url most likely means a forgotten url).
        """
        if self.password is not None and self.password_file is not None:
            raise TraitError("give Mole.password or Mole.password_file, not both")
        if self.fingerprint and self.url and not self.url.startswith("https"):
            raise TraitError("Mole.fingerprint pins an https server, but Mole.url is http")
        if log is None:
            return
        ignored = ", ".join(f"Mole.{name}" for name in self.ignored())
        if ignored and self.url:
            log.warning(
                "jupyter-mole: %s ignored: for the embedded server only, and Mole.url is set",
                ignored,
            )
        elif ignored:
            log.warning(
                "jupyter-mole: %s ignored: for the server at Mole.url only, and Mole.url is "
                "not set (the embedded server is used)",
                ignored,
            )

    def ignored(self) -> list[str]:
        """The traits given a value that the configured kind of backend never reads."""
        names = EMBEDDED_ONLY if self.url else BACKEND_ONLY
        traits = self.traits()
        return [n for n in names if getattr(self, n) != traits[n].default()]


def read_password_file(value: str) -> str:
    """The password: the file's first line, which must hold one (TraitError otherwise)."""
    path = Path(value).expanduser()
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise TraitError(f"Mole.password_file: cannot read {path}: {e}") from None
    password = lines[0].strip() if lines else ""
    if not password:
        raise TraitError(f"Mole.password_file: {path} holds no password (its first line is empty)")
    return password
