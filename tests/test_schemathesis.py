"""A bounded schemathesis run: generated requests against a live server, answers against openapi.json.

One private server (plain HTTP, no password, 127.0.0.1 only) is fuzzed operation
by operation from the description it serves at ``/openapi.json``: schemathesis
generates valid and invalid requests (hypothesis, ``MAX_EXAMPLES`` per operation),
and every answer must not be a 5xx, and its status, content type and JSON body
must be ones the description documents.

Generated ids are random and so mostly reach the "not found" answers; so about
half of the cases get the id of a real, finished execution instead (except
DELETE /job/{id} and POST /remove, which would delete it), and the success
answers are fuzzed too (paths, offsets, limits, ``last``, ``reader``).

Every operation of the description is run, none excluded. Two are reached in a
roundabout way: GET /openapi.json (which schemathesis's own runner leaves out,
as it serves the schema under test) is driven here like any other; PROPFIND,
which OpenAPI 3.1 has no slot for (it is described under
``x-additionalOperations``), is generated from a copy of the description where
it stands in the ``put`` slot, and sent as PROPFIND.

schemathesis's pytest plugin (``schemathesis.pytest.from_fixture``) fails on
pytest 9 (``'Function' object has no attribute '_nodeid'``), so each operation
is a plain pytest test driving ``APIOperation.as_strategy`` with hypothesis.
"""

from __future__ import annotations

import copy
import json
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.servers import PI_SCRIPT, ServerProcess, serve_process

OPENAPI = Path(__file__).parent.parent / "jupyter_mole" / "server" / "openapi.json"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
MAX_EXAMPLES = 50
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# These delete the execution they name: never hand them the real one.
DELETES = {("DELETE", "/job/{id}"), ("POST", "/remove")}
UPLOAD_CAP = 4096  # small, so that generated uploads reach the 413 answer too


def operations() -> list[tuple[str, str]]:
    """Every (METHOD, path) the description documents, PROPFIND included."""
    document = json.loads(OPENAPI.read_text())
    found = []
    for path, item in document["paths"].items():
        found += [(m.upper(), path) for m in METHODS if m in item]
        found += [(m, path) for m in item.get("x-additionalOperations", {})]
    return found


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """A private no-password HTTP server on 127.0.0.1, and the id of a finished execution there."""
    state = tmp_path_factory.mktemp("schemathesis-server")
    server = serve_process(
        state, password=None, https=False, extra=("--max-upload", str(UPLOAD_CAP))
    )
    try:
        assert server.url.startswith("http://127.0.0.1:"), server.url  # loopback only
        folder = state / "work"
        (folder / "data").mkdir(parents=True)
        (folder / "pi.oms").write_text(PI_SCRIPT)
        (folder / "data" / "notes.txt").write_text("a file in a folder\n")
        tgz = state / "work.tgz"
        with tarfile.open(tgz, "w:gz") as tar:
            for name in ("pi.oms", "data/notes.txt"):
                tar.add(folder / name, arcname=name)
        assert tgz.stat().st_size < UPLOAD_CAP
        with httpx.Client(base_url=server.url, timeout=60) as client:
            started = client.post(
                "/job",
                data={"script": "pi.oms"},
                files={"workDirectory": ("work.tgz", tgz.read_bytes(), "application/gzip")},
            )
            assert started.status_code == 200, started.text
            execution_id = started.json()["id"]
            deadline = time.monotonic() + 120
            while client.get(f"/job/{execution_id}/state").json()["state"] == "running":
                assert time.monotonic() < deadline, "the pi workflow did not finish in 120 s"
                time.sleep(0.2)
        yield server, execution_id
    finally:
        server.stop()


@pytest.fixture(scope="module")
def schemas(fuzzed_server: tuple[ServerProcess, str]) -> tuple[Any, Any]:
    """The live description, and a copy with PROPFIND in the ``put`` slot."""
    server, _ = fuzzed_server
    live = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    assert live.raw_schema == json.loads(OPENAPI.read_text())
    document = copy.deepcopy(live.raw_schema)
    for item in document["paths"].values():
        extra = item.pop("x-additionalOperations", {})
        assert "put" not in item or not extra
        if "PROPFIND" in extra:
            item["put"] = extra["PROPFIND"]
    return live, schemathesis.openapi.from_dict(document)


def with_real_id(case: Any, execution_id: str) -> Any:
    """The same request about a real execution."""
    if case.path_parameters and "id" in case.path_parameters:
        case.path_parameters["id"] = execution_id
    if isinstance(case.query, dict) and "id" in case.query:
        case.query["id"] = execution_id
    if isinstance(case.body, dict) and "id" in case.body:
        case.body["id"] = execution_id
    if case.path in ("/state", "/output", "/download") and not (
        isinstance(case.body, dict) and "id" in case.body
    ):
        case.query = {**(case.query or {}), "id": execution_id}
    return case


def strategy_for(operation: Any, real_id: bool, execution_id: str) -> st.SearchStrategy:
    """Valid and invalid requests; about half of them about the real execution."""
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )
    if not real_id:
        return cases
    return st.tuples(cases, st.booleans()).map(
        lambda pair: with_real_id(pair[0], execution_id) if pair[1] else pair[0]
    )


@pytest.mark.parametrize(("method", "path"), operations(), ids=lambda x: x)
def test_the_server_answers_as_described(
    method: str, path: str, schemas: tuple[Any, Any], fuzzed_server: tuple[ServerProcess, str]
) -> None:
    server, execution_id = fuzzed_server
    live, propfind = schemas
    operation = propfind[path]["PUT"] if method == "PROPFIND" else live[path][method]
    real_id = (method, path) not in DELETES
    sent: list[int] = []

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
        print_blob=True,
    )
    @given(case=strategy_for(operation, real_id, execution_id))
    def run(case: Any) -> None:
        if method == "PROPFIND":
            case.method = "PROPFIND"
        response = case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=60)
        sent.append(response.status_code)

    run()
    assert sent, f"no request was sent to {method} {path}"
