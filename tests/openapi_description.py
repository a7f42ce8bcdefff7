"""The OpenAPI description as the tests read it, and ``check``, which asserts that an answer
is one the description documents (recording it in ``SEEN``); plus the small request helpers
of the live tests.

Shared by tests/test_openapi_document.py (the document itself, and ``check`` shown to refuse
bad answers) and tests/test_openapi.py (live servers), split from one file to keep each
under 600 lines.
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

import jupyter_mole
from tests.servers import (
    FAILING_SCRIPT,
    PI_SCRIPT,
    SLEEPY_SCRIPT,
)

OPENAPI = Path(jupyter_mole.__file__).parent / "server" / "openapi.json"
SPEC: dict[str, Any] = json.loads(OPENAPI.read_text())
BASE_URI = "urn:jupyter-mole:openapi"
REGISTRY = Registry().with_resource(
    BASE_URI, Resource.from_contents(SPEC, default_specification=DRAFT202012)
)
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
SEEN: set[tuple[str, str, str]] = set()  # (METHOD, template, status) that check() met


# -- reading the description --------------------------------------------------------------
def operations() -> list[tuple[str, str, dict[str, Any]]]:
    """(METHOD, template, operation) for every operation, PROPFIND included."""
    found = []
    for template, item in SPEC["paths"].items():
        found += [(m.upper(), template, item[m]) for m in METHODS if m in item]
        found += [(m, template, op) for m, op in item.get("x-additionalOperations", {}).items()]
    return found


def operation_pointer(method: str, template: str) -> str:
    item = SPEC["paths"][template]
    escaped = template.replace("~", "~0").replace("/", "~1")
    if method.lower() in item:
        return f"/paths/{escaped}/{method.lower()}"
    assert method in item.get("x-additionalOperations", {}), f"{method} {template} is not described"
    return f"/paths/{escaped}/x-additionalOperations/{method}"


def at(pointer: str) -> Any:
    node: Any = SPEC
    for part in pointer.lstrip("/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[part]
    return node


def deref(pointer: str) -> tuple[str, Any]:
    """The object at ``pointer``, following ``$ref``s; and where it really is."""
    node = at(pointer)
    while isinstance(node, dict) and "$ref" in node:
        pointer = node["$ref"].removeprefix("#")
        node = at(pointer)
    return pointer, node


def validator(pointer: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"{BASE_URI}#{pointer}"}, registry=REGISTRY)


def schema_errors(component: str, instance: Any) -> list[str]:
    return [e.message for e in validator(f"/components/schemas/{component}").iter_errors(instance)]


def template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    pattern = "".join(
        (".+" if p == "{path}" else "[^/]+") if p.startswith("{") else re.escape(p) for p in parts
    )
    if template.endswith("/workDirectory"):
        pattern += "/?"  # the whole work directory, with or without a trailing slash
    return re.compile(pattern)


def check(response: httpx.Response, template: str) -> Any:
    """Assert ``response`` is an answer the description documents; its body, parsed.

    Fails on an undocumented status, a missing required header or one of the wrong
    type, an undocumented content type, a JSON body its schema refuses, or a body
    where the description documents none.
    """
    method = response.request.method
    path = response.request.url.path
    assert template_regex(template).fullmatch(path), f"{path} is not {template}"
    op_pointer = operation_pointer(method, template)
    status = str(response.status_code)
    what = f"{method} {path} answered {status} {response.text[:500]!r}"
    assert status in at(op_pointer)["responses"], f"undocumented status: {what}"
    pointer, documented = deref(f"{op_pointer}/responses/{status}")
    for name in documented.get("headers", {}):
        header_pointer, header = deref(f"{pointer}/headers/{name}")
        if name not in response.headers:
            assert not header.get("required"), f"no {name} header: {what}"
            continue
        raw = response.headers[name]
        value: Any = raw
        if header["schema"].get("type") == "integer":
            assert re.fullmatch(r"\d+", raw), f"{name}: {raw!r} is not an integer: {what}"
            value = int(raw)
        errors = [e.message for e in validator(f"{header_pointer}/schema").iter_errors(value)]
        assert not errors, f"{name}: {raw!r}: {errors}: {what}"
    content = documented.get("content")
    if not content:
        assert response.content == b"", f"a body where none is documented: {what}"
        SEEN.add((method, template, status))
        return None
    media = response.headers.get("content-type", "").split(";")[0].strip().lower()
    assert media in content, f"content type {media!r}, documented {sorted(content)}: {what}"
    body: Any = response.content
    if media == "application/json":
        try:
            body = response.json()
        except ValueError:
            raise AssertionError(f"not JSON: {what}") from None
        media_pointer = f"{pointer}/content/{media.replace('/', '~1')}"
        errors = sorted(validator(f"{media_pointer}/schema").iter_errors(body), key=str)
        assert not errors, f"the body breaks its schema: {[e.message for e in errors]}: {what}"
    elif media.startswith("text/"):
        body = response.text
    SEEN.add((method, template, status))
    return body


# -- live servers: requests ------------------------------------------------------------
FILES = {
    "pi.oms": PI_SCRIPT,
    "fail.oms": FAILING_SCRIPT,
    "sleepy.oms": SLEEPY_SCRIPT,
    "bad.oms": "x = = 1\n",
    "nowf.oms": "x = 1\n",
    "data/notes.txt": "a file in a folder\n",
}


def upload(archive: bytes) -> dict[str, Any]:
    return {"workDirectory": ("work.tgz", archive, "application/gzip")}


def start(http: httpx.Client, auth: dict[str, str], archive: bytes, script: str) -> str:
    answer = http.post("/job", headers=auth, data={"script": script}, files=upload(archive))
    return check(answer, "/job")["id"]


def wait(http: httpx.Client, auth: dict[str, str], execution_id: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while True:
        state = http.get(f"/job/{execution_id}/state", headers=auth).json()["state"]
        if state != "running":
            return state
        assert time.monotonic() < deadline, f"{execution_id} still runs after {timeout} s"
        time.sleep(0.2)


def raw_exchange(url: str, request: bytes) -> tuple[str, str]:
    """Send ``request`` on a socket of its own: the answer's head, and what a next request gets."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"closed without an answer: {data!r}"
            data += chunk
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        time.sleep(0.2)
        try:
            sock.sendall(b"GET /service-info HTTP/1.1\r\nHost: test\r\n\r\n")
            data = sock.recv(65536)
        except OSError:
            data = b""
    return head, data.split(b"\r\n", 1)[0].decode("latin-1") or "<closed>"
