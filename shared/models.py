"""ML Server's wire models (names and fields as its swagger has them), declared once: the
core swagger document is generated from them, and responses are completed from them so that
every field is always present."""
from __future__ import annotations

from typing import Any

_S = {"type": "string"}
_I = {"type": "integer", "format": "int32"}
_B = {"type": "boolean"}
_STRINGS = {"type": "array", "items": _S}
_RUNTIME = {"type": "string", "enum": ["R", "Python"]}


def _ref(name: str) -> dict:
    return {"$ref": f"#/definitions/{name}"}


def _obj(props: dict[str, Any], *, required: list[str] | None = None) -> dict:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    return out


DEFINITIONS: dict[str, dict] = {
    "LoginRequest": _obj({"username": _S, "password": _S}),
    "RenewTokenRequest": _obj({"refreshToken": _S}),
    "AccessTokenResponse": _obj({"token_type": _S, "access_token": _S, "expires_in": _I, "expires_on": _I,
                                 "refresh_token": _S}),
    "Error": _obj({"message": _S, "link": _S, "exceptionType": _S, "error": _S, "correlationId": _S}),
    "StatusResponse": _obj({"statusCode": {"type": "string", "enum": ["fail", "pass", "warn"]},
                            "details": {"type": "object", "additionalProperties": {}},
                            "components": {"type": "object", "additionalProperties": _ref("StatusResponse")}}),
    "Session": _obj({"id": _S, "name": _S, "owner": _S, "runtimeType": _RUNTIME}),
    "CreateSessionRequest": _obj({"name": _S, "snapshotId": _S, "runtimeType": _RUNTIME}),
    "CreateSessionResponse": _obj({"sessionId": _S}),
    "WorkspaceObject": _obj({"name": _S, "value": {}}),
    "ExecuteRequest": _obj({"code": _S, "inputParameters": {"type": "array", "items": _ref("WorkspaceObject")},
                            "outputParameters": _STRINGS}, required=["code"]),
    "ExecuteResponse": _obj({"success": _B, "errorMessage": _S, "consoleOutput": _S,
                             "outputParameters": {"type": "array", "items": _ref("WorkspaceObject")},
                             "changedFiles": _STRINGS}),
    "ConsoleOutputResponse": _obj({"consoleOutput": _S}),
    "Snapshot": _obj({"id": _S, "name": _S, "owner": _S, "creationTime": _S, "contentSize": _I}),
    "CreateSnapshotRequest": _obj({"name": _S}),
    "CreateSnapshotResponse": _obj({"snapshotId": _S}),
    "ParameterDefinition": _obj({"name": _S, "type": {"type": "string", "enum": [
        "logical", "numeric", "integer", "character", "vector", "matrix", "data.frame"]}}),
    "PublishWebServiceRequest": _obj({
        "snapshotId": _S, "code": _S, "description": _S, "operationId": _S,
        "inputParameterDefinitions": {"type": "array", "items": _ref("ParameterDefinition")},
        "outputParameterDefinitions": {"type": "array", "items": _ref("ParameterDefinition")},
        "runtimeType": _RUNTIME, "initCode": _S, "outputFileNames": _STRINGS,
        # o16n: who besides the name's holder may publish versions under it (SERVICE_NAMES=owned)
        "coPublishers": _STRINGS}),
    "WebService": _obj({
        "name": _S, "version": _S, "versionPublishedBy": _S, "creationTime": _S, "snapshotId": _S,
        "runtimeType": {"type": "string", "enum": ["R", "Python", "Realtime"]}, "initCode": _S, "code": _S,
        "description": _S, "operationId": _S,
        "inputParameterDefinitions": {"type": "array", "items": _ref("ParameterDefinition")},
        "outputParameterDefinitions": {"type": "array", "items": _ref("ParameterDefinition")},
        "outputFileNames": _STRINGS, "myPermissionOnService": _S, "coPublishers": _STRINGS},
        required=["name", "version"]),
    "SwaggerJsonResponse": {"type": "object", "additionalProperties": {}},
}


def complete(model: str, value: dict[str, Any]) -> dict[str, Any]:
    """Every field of `model`, in its order: unset strings as "", lists as [], others null."""
    out = {}
    for key, schema in DEFINITIONS[model]["properties"].items():
        v = value.get(key)
        if v is None:
            v = "" if schema.get("type") == "string" else [] if schema.get("type") == "array" else None
        out[key] = v
    return out
