"""The extension's configuration: ``c.Mole...`` traitlets, each with its help text.

Unset ``url`` means the embedded server. A configuration that cannot work
fails at start with a message naming the trait, as Jupyter users expect.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from traitlets import Bool, Float, Int, TraitError, Unicode, validate
from traitlets.config import Configurable

__all__ = ["Mole"]


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
        return value

    def check(self) -> None:
        """What no single trait can say: combinations that cannot work."""
        if self.password is not None and self.password_file is not None:
            raise TraitError("give Mole.password or Mole.password_file, not both")
        if self.fingerprint and self.url and not self.url.startswith("https"):
            raise TraitError("Mole.fingerprint pins an https server, but Mole.url is http")
