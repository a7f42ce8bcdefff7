"""Every route of the extension requires Jupyter's authentication, and XSRF for what changes state.

The routes are taken from ``jupyter_mole.labserver.handlers.routes`` and the
methods from their handler classes, so a route added without
``@tornado.web.authenticated`` makes these tests fail. The backend is the
session's HTTPS server with a password (so nothing embedded is started), and
no answer may carry its password or token.

Every route also asks Jupyter's Authorizer (resource ``mole``; ``contents``
too for what reads or writes the file tree): an authorizer that refuses is
obeyed. And hidden files of the tree are neither sent nor written unless
Jupyter shows them (``ContentsManager.allow_hidden``).
"""

from __future__ import annotations

import json
import re
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import tornado.web
from jupyter_server.serverapp import ServerWebApplication
from pytest_jupyter.jupyter_server import *  # noqa: F403  (see test_labserver's docstring)
from tornado.httpclient import HTTPResponse

from jupyter_mole.labserver.handlers import routes
from tests.labservers import DenyingAuthorizer
from tests.servers import ServerProcess
from tests.test_labserver import (  # noqa: F401  (the fixtures are used by name)
    Api,
    api_fixture,
    backend_of,
    jp_server_config_fixture,
    no_stray_servers_fixture,
    on_loop,
    server_log_fixture,
    write_project,
)

METHODS = ("get", "post", "put", "patch", "delete")
EXECUTION = "0123abcd-no-such-execution"


@pytest.fixture(name="mole_config")
def remote_mole_config(mole_server: ServerProcess, tmp_path: Path) -> dict[str, Any]:
    password_file = tmp_path / "backend-password.txt"
    password_file.write_text(f"{mole_server.password}\n")
    return {
        "url": mole_server.url,
        "fingerprint": mole_server.fingerprint,
        "password_file": str(password_file),
    }


def every_route(base_url: str) -> list[tuple[str, str, str]]:
    """(method, concrete path, pattern) for every method of every route of the extension."""
    found = []
    for pattern, handler in routes(base_url):
        path = re.sub(r"\(\?P<execution_id>[^)]*\)", EXECUTION, pattern)
        assert "(" not in path, f"a route with a parameter the test does not know: {pattern}"
        for method in METHODS:
            if getattr(handler, method) is not getattr(tornado.web.RequestHandler, method):
                found.append((method.upper(), path, pattern))
    return found


def test_the_route_list_is_complete() -> None:
    """What the other tests here walk through: every route, and each method it answers; and
    Jupyter's own check finds the authentication decorator on every method."""
    check = getattr(ServerWebApplication, "_check_handler_auth", None)  # jupyter_server >= 2.13
    for pattern, handler in routes("/base/"):
        assert check is None or check(None, pattern, handler) == []
    listed = {(m, p.removeprefix("/base/mole/api/")) for m, p, _ in every_route("/base/")}
    assert listed == {
        ("GET", "service"),
        ("GET", "executions"),
        ("POST", "executions"),
        ("GET", f"executions/{EXECUTION}"),
        ("DELETE", f"executions/{EXECUTION}"),
        ("GET", f"executions/{EXECUTION}/state"),
        ("GET", f"executions/{EXECUTION}/output"),
        ("GET", f"executions/{EXECUTION}/errors"),
        ("GET", f"executions/{EXECUTION}/files"),
        ("POST", f"executions/{EXECUTION}/cancel"),
        ("POST", f"executions/{EXECUTION}/download"),
    }


async def send(
    client: Any, method: str, path: str, headers: dict[str, str] | None = None, body: Any = None
) -> HTTPResponse:
    if method in ("POST", "PUT", "PATCH") and body is None:
        body = json.dumps({"path": "project/model.oms", "to": "here"})
    return await client.fetch(
        path, method=method, headers=headers or {}, body=body, raise_error=False,
        follow_redirects=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    "jp_server_config_extra",
    [{}, {"allow_unauthenticated_access": False}],
    ids=["jupyter-default", "unauthenticated-access-disallowed"],
)
@on_loop
async def test_every_route_refuses_requests_without_authentication(
    jp_server_config_extra: dict[str, Any],
    jp_serverapp: Any,
    http_server_client: Any,
    jp_base_url: str,
    jp_root_dir: Path,
) -> None:
    await backend_of(jp_serverapp).connect()
    write_project(jp_root_dir)
    backend = backend_of(jp_serverapp)
    before = (backend.queries, backend.list_queries)
    for method, path, _ in every_route(jp_base_url):
        for headers in ({}, {"Authorization": "token wrong"}, {"Cookie": "username-x=forged"}):
            answer = await send(http_server_client, method, path, headers)
            assert answer.code in (401, 403), f"{method} {path} {headers}: {answer.code}"
            assert b"jupyter-mole" not in (answer.body or b"")
    assert (backend.queries, backend.list_queries) == before  # nothing reached the backend
    assert not (jp_root_dir / "here").exists()


@pytest.fixture
def jp_server_config_extra() -> dict[str, Any]:
    return {}


@pytest.fixture
def denied() -> list[str]:
    """``action:resource`` pairs that Jupyter's authorizer refuses (none: Jupyter's default)."""
    return []


@pytest.fixture
def allow_hidden() -> bool:
    return False  # Jupyter's default


@pytest.fixture
def _server_extra(
    jp_server_config: dict[str, Any],
    jp_server_config_extra: dict[str, Any],
    denied: list[str],
    allow_hidden: bool,
) -> None:
    jp_server_config["ServerApp"].update(jp_server_config_extra)
    if denied:
        jp_server_config["ServerApp"]["authorizer_class"] = DenyingAuthorizer
        jp_server_config["DenyingAuthorizer"] = {"denied": denied}
    jp_server_config["ContentsManager"] = {"allow_hidden": allow_hidden}


async def log_in(client: Any, base_url: str, token: str) -> dict[str, str]:
    """Log in as a browser does (the login form, with the token as password): its cookies."""
    cookies: dict[str, str] = {}

    def keep(answer: HTTPResponse) -> None:
        for header in answer.headers.get_list("Set-Cookie"):
            for name, morsel in SimpleCookie(header).items():
                cookies[name] = morsel.value

    form = await client.fetch(f"{base_url}login", raise_error=False, follow_redirects=False)
    keep(form)
    assert "_xsrf" in cookies
    answer = await client.fetch(
        f"{base_url}login",
        method="POST",
        body=urlencode({"password": token, "_xsrf": cookies["_xsrf"]}),
        headers={"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())},
        raise_error=False,
        follow_redirects=False,
    )
    assert answer.code == 302, answer.code
    keep(answer)
    assert any(name.startswith("username-") for name in cookies), cookies
    return cookies


@on_loop
async def test_state_changing_routes_need_the_xsrf_token_with_a_cookie(
    jp_serverapp: Any,
    http_server_client: Any,
    jp_base_url: str,
    jp_auth_header: dict[str, str],
    jp_root_dir: Path,
) -> None:
    """A browser's cookie alone cannot change anything (a forged cross-site form could send
    it); with the XSRF token, or with a token header, the request goes through."""
    await backend_of(jp_serverapp).connect()
    token = jp_serverapp.identity_provider.token
    cookies = await log_in(http_server_client, jp_base_url, token)
    cookie = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
    with_xsrf = {**cookie, "X-XSRFToken": cookies["_xsrf"]}
    changing = [(m, p) for m, p, _ in every_route(jp_base_url) if m != "GET"]
    assert {m for m, _ in changing} == {"POST", "DELETE"}
    for method, path in changing:
        refused = await send(http_server_client, method, path, cookie)
        assert refused.code == 403 and b"XSRF" in refused.body.upper(), f"{method} {path}"
        for headers in (with_xsrf, jp_auth_header):
            answer = await send(http_server_client, method, path, headers)
            assert answer.code not in (401, 403), f"{method} {path}: {answer.code} {answer.body}"
    for method, path, _ in every_route(jp_base_url):
        if method == "GET":  # reading needs the cookie only
            assert (await send(http_server_client, method, path, cookie)).code not in (401, 403)


@on_loop
async def test_the_browser_never_sees_the_backends_password_or_token(
    jp_serverapp: Any, api: Api, jp_root_dir: Path, mole_server: ServerProcess
) -> None:
    backend = backend_of(jp_serverapp)
    await backend.connect()
    execution = await api.start(write_project(jp_root_dir))
    await api.wait(execution)
    await api("service")
    await api("executions")
    for route in ("", "state", "output", "errors", "files"):
        await api("executions", execution, *([route] if route else []))
    await api("executions", execution, "cancel", method="POST")
    body = {"path": "result.csv", "to": "out"}
    await api("executions", execution, "download", method="POST", body=body, expect=201)
    await api("executions", execution, method="DELETE")
    for route in ("state", "output", "files"):
        await api("executions", execution, route, expect=404)
    assert backend.client is not None and backend.client.token  # a token was bought and used
    api.assert_never_seen(mole_server.password, backend.client.token)
    assert len(api.seen) > 20


# -- Jupyter's authorization -----------------------------------------------------------------


@pytest.mark.parametrize("denied", [["read:mole", "write:mole"]], ids=["mole-refused"])
@on_loop
async def test_every_route_obeys_jupyters_authorizer(
    jp_serverapp: Any,
    http_server_client: Any,
    jp_base_url: str,
    jp_auth_header: dict[str, str],
    jp_root_dir: Path,
) -> None:
    """Authenticated, but not authorized: every route refuses, and nothing reaches the backend."""
    backend = backend_of(jp_serverapp)
    await backend.connect()
    write_project(jp_root_dir)
    before = (backend.queries, backend.list_queries)
    for method, path, _ in every_route(jp_base_url):
        answer = await send(http_server_client, method, path, jp_auth_header)
        assert answer.code == 403, f"{method} {path}: {answer.code}"
        action = "read" if method == "GET" else "write"
        said = json.loads(answer.body)["message"]
        assert said == f"User is not authorized to {action} on resource: mole.", said
    assert (backend.queries, backend.list_queries) == before
    assert not (jp_root_dir / "here").exists()


@pytest.mark.parametrize(
    "denied", [["read:contents"], ["write:contents"]], ids=["no-reading", "no-writing"]
)
@on_loop
async def test_what_touches_the_file_tree_needs_the_contents_permission(
    jp_serverapp: Any, api: Api, jp_root_dir: Path, denied: list[str]
) -> None:
    """Sending a folder of the tree reads it; downloading into the tree writes it."""
    await backend_of(jp_serverapp).connect()
    script = write_project(jp_root_dir, "project", "this is not (a script\n")
    body = {"path": "result.csv", "to": "here"}
    if denied == ["read:contents"]:
        refused = await api("executions", method="POST", body={"path": script}, expect=403)
        assert refused["message"] == "User is not authorized to read on resource: contents."
        # writing is allowed: the request reaches the backend (which knows no such execution)
        await api("executions", EXECUTION, "download", method="POST", body=body, expect=404)
    else:
        refused = await api(
            "executions", EXECUTION, "download", method="POST", body=body, expect=403
        )
        assert refused["message"] == "User is not authorized to write on resource: contents."
        # reading is allowed: the folder reaches the backend (which refuses the script)
        await api("executions", method="POST", body={"path": script}, expect=417)
    assert isinstance(await api("executions"), list)  # the rest is the mole resource's
    assert not (jp_root_dir / "here" / "result.csv").exists()


# -- hidden files of the tree ----------------------------------------------------------------


@pytest.mark.parametrize("allow_hidden", [False, True], ids=["hidden-refused", "allow_hidden"])
@on_loop
async def test_hidden_files_of_the_tree_are_neither_sent_nor_written_unless_shown(
    jp_serverapp: Any, api: Api, jp_root_dir: Path, allow_hidden: bool
) -> None:
    await backend_of(jp_serverapp).connect()
    broken = "this is not (a script\n"  # refused by the backend, once it gets there
    scripts = [
        write_project(jp_root_dir, ".secrets", broken),
        write_project(jp_root_dir, "visible/.config", broken),
    ]
    (jp_root_dir / "visible" / ".model.oms").write_text(broken)
    scripts.append("visible/.model.oms")
    targets = [
        {"path": "result.csv", "to": ".cache"},
        {"path": "result.csv", "to": "visible/.config/deeper"},
        {"path": "results/.env", "to": "visible"},
    ]
    for path in scripts:
        if allow_hidden:  # sent: the backend answers
            await api("executions", method="POST", body={"path": path}, expect=417)
            continue
        refused = await api("executions", method="POST", body={"path": path}, expect=403)
        assert refused["message"].startswith(f"{path}: a hidden file or folder"), refused
        assert "ContentsManager.allow_hidden is False" in refused["message"]
    for body in targets:
        if allow_hidden:  # passed on: the backend knows no such execution
            await api("executions", EXECUTION, "download", method="POST", body=body, expect=404)
            continue
        refused = await api(
            "executions", EXECUTION, "download", method="POST", body=body, expect=403
        )
        assert "a hidden file or folder" in refused["message"], refused
    assert allow_hidden or not (jp_root_dir / ".cache").exists()
    # what Jupyter shows goes through either way
    visible = write_project(jp_root_dir, "shown", broken)
    await api("executions", method="POST", body={"path": visible}, expect=417)


# every test here runs with the extra ServerApp settings of its parametrization
pytestmark = pytest.mark.usefixtures("_server_extra")
