"""The core swagger is generated from the registered operations and is valid Swagger 2.0; what
it says a request may hold is what the server takes."""
import re
import uuid

import pytest
from openapi_spec_validator import validate

from function_app import app
from functions import web
from shared import ids, models, services, swagger
from shared.errors import BadRequest, NotFound

ML_SERVER_9_3 = {
    "login", "renewToken", "revokeRefreshToken", "getAllWebServices", "publishWebService",
    "getAllWebServiceVersionsByName", "publishWebServiceVersion", "patchWebServiceVersion", "getWebServiceVersion",
    "deleteWebServiceVersion", "publishRealtimeWebServiceByName", "publishRealtimeWebServiceByNameVersion",
    "patchRealtimeWebServiceByNameVersion", "createOrUpdateServicePool", "getServicePoolStatus", "deleteServicePool",
    "GetWebServiceSwagger", "createSession", "listSessions", "closeSession", "closeSessionByForce", "cancelSession",
    "executeCode", "getSessionConsoleOutput", "listSessionHistory", "listSessionFiles", "uploadSessionFile",
    "getSessionFile", "deleteSessionFile", "listWorkspaceObjects", "setWorkspaceObject", "getWorkspaceObject",
    "deleteWorkspaceObject", "CreateSnapshot", "LoadSnapshot", "ListSnapshots", "GetSnapshotContent",
    "DeleteSnapshot", "status", "getComputeNodes", "setComputeNodes", "addComputeNode", "removeComputeNode"}


def test_the_core_document_is_valid_swagger_2():
    validate(swagger.core_document())


def test_it_has_every_ml_server_operation_id():
    doc = swagger.core_document()
    ids = {op["operationId"] for path in doc["paths"].values() for op in path.values()}
    assert ML_SERVER_9_3 <= ids


def test_every_documented_path_and_method_is_a_registered_function():
    app.functions_bindings = None
    registered = {("/" + f.get_trigger().route, m.value.lower()) for f in app.get_functions()
                  if f.is_http_function() for m in f.get_trigger().methods}
    documented = {(p, m) for p, ops in swagger.core_document()["paths"].items() for m in ops}
    assert documented <= registered
    # the web page for people (functions/web.py) is no API operation
    page = {("/" + web.PAGE_ROUTE, "get"), ("/ui/{name}", "get"), ("/ui/config.json", "get")}
    assert page <= registered
    registered -= page
    # only consumption and batch are left to each service's own document
    assert {r for r in registered - documented if not r[0].startswith("/api/{name}/{version}/batch")} == {
        ("/api/{name}/{version}", "post")}
    batch = {r for r in registered if r[0].startswith("/api/{name}/{version}/batch")}
    assert len(batch) == 6


def test_models_carry_ml_server_field_names():
    defs = swagger.core_document()["definitions"]
    assert list(defs["WebService"]["properties"])[:2] == ["name", "version"]
    assert {"inputParameterDefinitions", "outputParameterDefinitions", "outputFileNames", "initCode",
            "myPermissionOnService", "operationId"} <= set(defs["WebService"]["properties"])
    assert set(defs["ExecuteResponse"]["properties"]) == {"success", "errorMessage", "consoleOutput",
                                                          "outputParameters", "changedFiles"}


def _operations():
    return [(f"{method.upper()} {path}", op) for path, ops in swagger.core_document()["paths"].items()
            for method, op in ops.items()]


def test_every_error_is_declared_as_the_error_model_and_storage_can_fail_on_every_operation():
    for label, op in _operations():
        responses = op["responses"]
        assert responses["503"]["headers"]["Retry-After"]["x-required"], label
        if op.get("security"):
            assert {"401", "403"} <= set(responses), label
        if any(p["in"] in ("body", "formData") for p in op["parameters"]):
            assert {"400", "413"} <= set(responses), label
        for code, response in responses.items():
            assert int(code) < 400 or response["schema"] == {"$ref": "#/definitions/Error"}, (label, code)


def test_an_operation_that_answers_a_file_answers_its_errors_as_json():
    files = {label: op["produces"] for label, op in _operations()
             if any(r.get("schema", {}).get("format") == "binary" for r in op["responses"].values())}
    assert files == {"GET /sessions/{id}/workspace/{objectName}": ["application/octet-stream", "application/json"],
                     "GET /sessions/{id}/files/{fileName}": ["application/octet-stream", "application/json"],
                     "GET /snapshots/{id}": ["application/zip", "application/json"]}


def test_concurrency_and_retry_headers_are_declared():
    ops = dict(_operations())
    version = "/services/{name}/{version}"
    for label in (f"PATCH {version}", f"DELETE {version}"):
        assert {"name": "If-Match", "in": "header"}.items() <= _header(ops[label], "If-Match").items()
        assert "412" in ops[label]["responses"]
    for label in (f"GET {version}", f"PATCH {version}"):
        assert "ETag" in ops[label]["responses"]["200"]["headers"]
    keyed = {label for label, op in ops.items() if _header(op, "Idempotency-Key")}
    assert keyed == {"POST /services/{name}", f"POST {version}", "POST /realtime-services/{name}",
                     "POST /realtime-services/{name}/{version}", "POST /sessions/{id}/snapshot"}


def _header(op: dict, name: str) -> dict:
    return next((p for p in op["parameters"] if p["in"] == "header" and p["name"] == name), {})


def _allows(schema: dict, value: str) -> bool:
    """As a JSON Schema validator reads pattern and maxLength ("$" is the end, as in JavaScript)."""
    pattern = schema["pattern"]
    pattern = pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern
    return re.search(pattern, value) is not None and len(value) <= schema.get("maxLength", len(value))


def _accepts(check, value: str) -> bool:
    try:
        check(value)
    except BadRequest:
        return False
    return True


SAMPLES = ["a", "Iris", "V1.0", "a_b-c.d", "0", "x" * 128, "x" * 129, "", ".", "..", "-a", ".hidden", "a b", "a/b",
           "a\n", "é", "a%2Fb", "_x", "x1", "1x", "class", "données", "K-" + "x" * 198, "k" * 201, "a\tb", "~!"]


def _known_id(value: str) -> None:
    try:
        ids.existing_id(value, "session")
    except NotFound:  # what is not an id o16n issued is not found, never looked up
        raise BadRequest("not an id") from None


@pytest.mark.parametrize("schema, check", [
    (models.NAME, ids.service_name), (models.NAME, ids.file_name), (models.UUID, _known_id),
    (models.IDENTIFIER, lambda v: ids.identifier(v, "x")),
    (swagger.HEADERS["Idempotency-Key"], ids.idempotency_key),
    (models.DEFINITIONS["PublishWebServiceRequest"]["properties"]["code"], services._code),
])
def test_the_documents_allow_what_the_server_takes_and_no_more(schema, check):
    for value in SAMPLES + [str(uuid.uuid4()), str(uuid.uuid4()).upper(), " \t", "\x1f", "\u3000x"]:
        assert _allows(schema, value) == _accepts(check, value), value


def test_a_workspace_object_name_the_document_allows_is_taken():
    # Any Python identifier is taken (user code makes the names); the pattern shows the ASCII ones.
    for value in SAMPLES:
        if _allows(models.OBJECT_NAME, value):
            assert _accepts(ids.object_name, value), value
