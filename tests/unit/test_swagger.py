"""The core swagger is generated from the registered operations and is valid Swagger 2.0."""
from openapi_spec_validator import validate

from function_app import app
from shared import swagger

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
                  for m in f.get_trigger().methods}
    documented = {(p, m) for p, ops in swagger.core_document()["paths"].items() for m in ops}
    assert documented <= registered
    # only consumption is left to each service's own document
    assert {r for r in registered - documented} == {("/api/{name}/{version}", "post")}


def test_models_carry_ml_server_field_names():
    defs = swagger.core_document()["definitions"]
    assert list(defs["WebService"]["properties"])[:2] == ["name", "version"]
    assert {"inputParameterDefinitions", "outputParameterDefinitions", "outputFileNames", "initCode",
            "myPermissionOnService", "operationId"} <= set(defs["WebService"]["properties"])
    assert set(defs["ExecuteResponse"]["properties"]) == {"success", "errorMessage", "consoleOutput",
                                                          "outputParameters", "changedFiles"}
