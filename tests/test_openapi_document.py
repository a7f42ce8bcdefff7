"""The OpenAPI description (jupyter_mole/server/openapi.json) as a document: valid OpenAPI
3.1 (openapi-spec-validator), shipped in the package, covering exactly the server's route
table; and ``check`` shown to reject answers that break the description.

Split from tests/test_openapi.py (the live servers) to keep each file under 600 lines;
``check`` and the description's readers are in tests/openapi_description.py.
"""

from __future__ import annotations

import copy
import json
import re
from importlib import resources
from typing import Any

import httpx
import openapi_spec_validator
import pytest
import tornado.web
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

import jupyter_mole
from jupyter_mole.server import job_api, token_api
from tests.openapi_description import (
    OPENAPI,
    SEEN,
    SPEC,
    check,
    deref,
    operation_pointer,
    operations,
    schema_errors,
)


# -- the document itself ---------------------------------------------------------------------
def test_the_document_is_valid_openapi_3_1() -> None:
    assert SPEC["openapi"].startswith("3.1.")
    openapi_spec_validator.validate(SPEC)
    # written as 2-space JSON, so that diffs stay readable
    assert OPENAPI.read_text() == json.dumps(SPEC, indent=2, ensure_ascii=False) + "\n", (
        "reformat it: python -c 'import json, sys; p = sys.argv[1]; d = json.load(open(p)); "
        'open(p, "w").write(json.dumps(d, indent=2, ensure_ascii=False) + "\\n")\' '
        "jupyter_mole/server/openapi.json"
    )


def broken(change: Any) -> dict[str, Any]:
    document = copy.deepcopy(SPEC)
    change(document)
    return document


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["paths"]["/job/{id}"]["get"].update(parameters=[]),  # {id} undeclared
        lambda d: d["paths"]["/token"]["post"]["responses"].update({"2000": {"description": ""}}),
        lambda d: d["components"]["schemas"]["Token"]["properties"]["token"].update(type="text"),
        lambda d: d["components"]["parameters"]["IdQuery"].update({"in": "body"}),
    ],
    ids=["undeclared-path-parameter", "bad-status", "bad-type", "bad-location"],
)
def test_the_validator_refuses_a_broken_document(change: Any) -> None:
    """The validation above can fail."""
    with pytest.raises(OpenAPIValidationError):
        openapi_spec_validator.validate(broken(change))


def test_propfind_is_a_valid_operation_too() -> None:
    """PROPFIND sits in ``x-additionalOperations`` (3.1 has no slot for it): validate it as one."""
    found = 0
    for template, item in SPEC["paths"].items():
        for method, op in item.get("x-additionalOperations", {}).items():
            assert method == "PROPFIND"
            probe = {**SPEC, "paths": {template: {"post": op}}}
            openapi_spec_validator.validate(probe)
            found += 1
    assert found == 2


def test_it_ships_in_the_package_and_names_its_version() -> None:
    shipped = resources.files("jupyter_mole.server").joinpath("openapi.json").read_text()
    assert json.loads(shipped) == SPEC
    assert SPEC["info"]["version"] == jupyter_mole.__version__


def implemented(handler: type[tornado.web.RequestHandler]) -> set[str]:
    return {
        m.upper()
        for m in ("get", "post", "delete", "propfind", "put", "patch", "head", "options")
        if getattr(handler, m, None) is not getattr(tornado.web.RequestHandler, m, None)
    }


def test_it_describes_every_route_and_no_other() -> None:
    routes = [(re.compile(p + "$"), implemented(h)) for p, h in token_api.ROUTES + job_api.ROUTES]
    described = {(method, template) for method, template, _ in operations()}
    for method, template in described:
        example = template.replace("{id}", "0f3e").replace("{path}", "data/notes.txt")
        matches = [methods for pattern, methods in routes if pattern.fullmatch(example)]
        assert matches, f"{template}: no such route on the server"
        assert method in matches[0], f"{method} {template}: the server does not serve it"
    for pattern, methods in routes:
        for method in methods:
            assert any(
                m == method and pattern.fullmatch(t.replace("{id}", "x").replace("{path}", "p"))
                for m, t in described
            ), f"{method} {pattern.pattern} is served but not described"


def test_every_operation_says_what_it_is() -> None:
    for method, template, op in operations():
        label = f"{method} {template}"
        assert op.get("summary") and len(op.get("description", "")) > 20, label
        generation = op.get("x-generation")
        assert generation in ("token", "job", "extension"), label
        assert op["tags"] == [
            {
                "token": "token API (generation 1)",
                "job": "job API (generation 2)",
                "extension": "extensions",
            }[generation]
        ], label
        assert op.get("x-extension", False) is (generation == "extension"), label
        if generation == "token":
            assert method == "POST", label
        public = template in ("/token", "/service-info", "/openapi.json")
        assert ("security" in op and op["security"] == []) is public, label
        statuses = set(op["responses"])
        if not public:
            assert {"400", "401"} <= statuses, label
        dialect = "Error" if generation == "token" or template == "/token" else "ErrorKebab"
        for status in statuses - {"200", "202"}:
            _, answer = deref(f"{operation_pointer(method, template)}/responses/{status}")
            schema = answer["content"]["application/json"]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{dialect}"}, f"{label} {status}"
    assert {"bearerToken", "queryToken"} == set(SPEC["components"]["securitySchemes"])
    assert SPEC["security"] == [{"bearerToken": []}, {"queryToken": []}]


def test_the_schemas_refuse_wrong_shapes() -> None:
    assert not schema_errors("Error", {"message": "m", "stackTrace": "t"})
    assert schema_errors("Error", {"message": "m", "stack-trace": "t"})  # the other dialect
    assert schema_errors("ErrorKebab", {"message": "m", "stackTrace": "t"})
    assert schema_errors("Error", {"stackTrace": "t"})
    running = {
        "state": "running", "ready": 1, "running": 2, "completed": 3,
        "capsules": [["model", {"ready": 1, "running": 2, "completed": 3}]],
        "environments": [{"name": "local", "submitted": 2, "running": 2, "done": 3, "failed": 0,
                          "errors": [{"message": "m", "stackTrace": "t", "level": "WARNING"}]}],
    }  # fmt: skip
    assert not schema_errors("ExecutionState", running)
    assert schema_errors("ExecutionStateKebab", running)  # stackTrace in the kebab dialect
    assert schema_errors("ExecutionState", {**running, "state": "failed"})  # failed, no error
    assert schema_errors("ExecutionState", {**running, "error": {"message": "m"}})  # not failed
    assert schema_errors("ExecutionState", {**running, "capsules": [["model"]]})
    assert schema_errors("ExecutionState", {**running, "state": "paused"})
    assert schema_errors("ExecutionState", {"state": "finished"})  # ours has counters always
    assert schema_errors("DirectoryEntry", {"name": "a", "modified": 1, "type": "file"})
    assert schema_errors("DirectoryEntry", {"name": "a", "modified": 1, "type": "directory",
                                            "size": 3})  # fmt: skip
    assert schema_errors("Token", {"token": "t", "duration": "86400000"})


def fake(status: int, method: str, url: str, **kwargs: Any) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request(method, url), **kwargs)


def test_check_refuses_answers_that_break_the_description() -> None:
    url = "http://127.0.0.1/job/abc/state"
    state = {"state": "finished", "ready": 0, "running": 0, "completed": 1, "capsules": [],
             "environments": []}  # fmt: skip
    assert check(fake(200, "GET", url, json=state), "/job/{id}/state") == state
    refused = [
        fake(500, "GET", url, json={"message": "boom"}),  # undocumented status
        fake(417, "GET", url, json={"message": "Execution not found"}),  # the other generation's
        fake(200, "GET", url, text=json.dumps(state)),  # text/plain
        fake(200, "GET", url, json={**state, "stackTrace": "t"}),  # an unknown field
        fake(404, "GET", url, json={"message": "m", "stackTrace": "t"}),  # camelCase on /job
        fake(404, "GET", url, content=b'{"message": "m"}', headers={"Content-Type": "text/html"}),
    ]
    for response in refused:
        with pytest.raises(AssertionError):
            check(response, "/job/{id}/state")
    output = "http://127.0.0.1/job/abc/output"
    with pytest.raises(AssertionError, match="X-Next-Offset"):
        check(fake(200, "GET", output, text="out"), "/job/{id}/output")
    with pytest.raises(AssertionError, match="X-Next-Offset"):
        check(
            fake(200, "GET", output, text="o", headers={"X-Next-Offset": "-1"}), "/job/{id}/output"
        )
    with pytest.raises(AssertionError, match="a body where none"):
        check(fake(200, "DELETE", "http://127.0.0.1/job/abc", text="x"), "/job/{id}")
    with pytest.raises(AssertionError, match="is not"):
        check(fake(200, "GET", "http://127.0.0.1/job", json=[]), "/job/{id}")
    SEEN.clear()  # only real answers count below
