"""The server process starts, serves both generations and stops cleanly."""

from __future__ import annotations

import httpx

from tests.servers import PASSWORD, ServerProcess


def test_token_then_service_info_over_https(mole_server: ServerProcess) -> None:
    assert mole_server.url.startswith("https://127.0.0.1:")
    assert mole_server.fingerprint and len(mole_server.fingerprint.split(":")) == 32
    with httpx.Client(base_url=mole_server.url, verify=mole_server.verify) as client:
        answer = client.post("/token", data={"password": PASSWORD})
        assert answer.status_code == 202
        assert answer.json()["duration"] == 86_400_000
        info = client.get("/service-info").json()
        assert info["generations"] == ["token", "job"] and info["auth"] == "token"
