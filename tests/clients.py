"""Helpers for the client tests, shared by ``test_client.py`` and ``test_client_connection.py``."""

from __future__ import annotations

from jupyter_mole.client import MoleClient
from tests.servers import ServerProcess


def client_for(server: ServerProcess, **options: object) -> MoleClient:
    options.setdefault("fingerprint", server.fingerprint)
    return MoleClient(server.url, server.password, **options)  # type: ignore[arg-type]
