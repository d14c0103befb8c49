"""ML Server's wire models (names and fields as its swagger has them), declared once: the
core swagger document is generated from them, and responses are completed from them so that
every field is always present. What a request may hold (patterns, lengths, required fields)
comes from the constants the server checks with (shared.ids, shared.types)."""
from __future__ import annotations

from typing import Any

from . import ids, types

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


def matching(pattern: str, max_length: int | None = None, *, empty: bool = False, **extra: Any) -> dict:
    """A string that `pattern` matches whole (or "", with `empty`), as the server checks it."""
    out: dict[str, Any] = {"type": "string", "pattern": f"^(?:{pattern}){'?' if empty else ''}$"}
    if max_length is not None:
        out["maxLength"] = max_length
    return {**out, **extra}


def text(max_length: int, **extra: Any) -> dict:
    return {"type": "string", "maxLength": max_length, **extra}


def _nullable(schema: dict) -> dict:
    """Optional fields may be sent as null (what generated clients send for unset fields)."""
    return {**schema, "x-nullable": True}


NAME = matching(ids.NAME, ids.NAME_MAX)
UUID = matching(ids.UUID, ids.UUID_LENGTH)
IDENTIFIER = matching(ids.IDENTIFIER, ids.IDENTIFIER_MAX)
# Any Python identifier is taken (user code makes the names); a pattern can only show the ASCII ones.
PYTHON_NAME = matching(ids.IDENTIFIER, description="a Python identifier")
OBJECT_NAME = {**PYTHON_NAME, "maxLength": ids.OBJECT_NAME_MAX}
_SNAPSHOT_REF = _nullable(matching(ids.UUID, ids.UUID_LENGTH, empty=True,
                                   description="a snapshot of the caller's; empty or null for none"))
_PARAMETERS = {"type": "array", "maxItems": ids.MAX_PARAMETERS, "uniqueItems": True,
               "items": _ref("ParameterDefinition"), "description": "names are unique"}
_PYTHON_ONLY = {"type": "string", "enum": ["Python"], "description": "o16n serves Python only (ML Server's default was R)"}


def _publish(*, required: bool, co_publishers: bool) -> dict:
    """PublishWebServiceRequest as publish (`required`) or PATCH (absent or null keeps a field)
    takes it; `co_publishers` only for a named version."""
    # NOT_BLANK is searched, not matched whole: some character that is not white space
    code = {"type": "string", "pattern": ids.NOT_BLANK, "maxLength": ids.TEXT_MAX,
            "description": "the Python code run for each request"}
    props: dict[str, Any] = {
        "snapshotId": _SNAPSHOT_REF,
        "code": code if required else _nullable(code),
        "description": _nullable(text(ids.TEXT_MAX)),
        "operationId": _nullable(matching(ids.IDENTIFIER, ids.IDENTIFIER_MAX, empty=True)),
        "inputParameterDefinitions": _nullable(_PARAMETERS),
        "outputParameterDefinitions": _nullable(_PARAMETERS),
        "runtimeType": _PYTHON_ONLY if required else _nullable({**_PYTHON_ONLY, "enum": ["Python", None]}),
        "initCode": _nullable(text(ids.TEXT_MAX)),
        "outputFileNames": _nullable({"type": "array", "maxItems": ids.MAX_OUTPUT_FILES, "items": NAME}),
    }
    if co_publishers:
        # o16n: who besides the name's holder may publish versions under it (SERVICE_NAMES=owned)
        props["coPublishers"] = _nullable({"type": "array", "maxItems": ids.MAX_CO_PUBLISHERS,
                                           "items": {"type": "string", "minLength": 1,
                                                     "maxLength": ids.USER_NAME_MAX}})
    return _obj(props, required=["code", "runtimeType"] if required else None)


DEFINITIONS: dict[str, dict] = {
    "LoginRequest": _obj({"username": {"type": "string", "minLength": 1, "maxLength": ids.USER_NAME_MAX},
                          "password": text(ids.PASSWORD_MAX)}, required=["username", "password"]),
    "RenewTokenRequest": _obj({"refreshToken": {"type": "string", "minLength": 1}}, required=["refreshToken"]),
    "AccessTokenResponse": _obj({"token_type": _S, "access_token": _S, "expires_in": _I, "expires_on": _I,
                                 "refresh_token": _S}),
    "Error": _obj({"message": _S, "link": _S, "exceptionType": _S, "error": _S, "correlationId": _S}),
    "StatusResponse": _obj({"statusCode": {"type": "string", "enum": ["fail", "pass", "warn"]},
                            "details": {"type": "object", "additionalProperties": {}},
                            "components": {"type": "object", "additionalProperties": _ref("StatusResponse")}}),
    "Session": _obj({"id": _S, "name": _S, "owner": _S, "runtimeType": _RUNTIME}),
    "CreateSessionRequest": _obj({"name": _nullable(text(ids.TITLE_MAX)), "snapshotId": _SNAPSHOT_REF,
                                  "runtimeType": _PYTHON_ONLY}, required=["runtimeType"]),
    "CreateSessionResponse": _obj({"sessionId": _S}),
    "WorkspaceObject": _obj({"name": _S, "value": {}}),
    "ExecuteRequest": _obj({
        "code": _S,
        # o16n: the values are injected as variables of these names
        "inputParameters": _nullable({"type": "array", "items": _obj({"name": PYTHON_NAME, "value": {}},
                                                                     required=["name", "value"])}),
        "outputParameters": _nullable(_STRINGS)}, required=["code"]),
    "ExecuteResponse": _obj({"success": _B, "errorMessage": _S, "consoleOutput": _S,
                             "outputParameters": {"type": "array", "items": _ref("WorkspaceObject")},
                             "changedFiles": _STRINGS}),
    "ConsoleOutputResponse": _obj({"consoleOutput": _S}),
    "Snapshot": _obj({"id": _S, "name": _S, "owner": _S, "creationTime": _S, "contentSize": _I}),
    "CreateSnapshotRequest": _obj({"name": _nullable(text(ids.TITLE_MAX))}),
    "CreateSnapshotResponse": _obj({"snapshotId": _S}),
    "ParameterDefinition": _obj({"name": IDENTIFIER, "type": {"type": "string", "enum": list(types.TYPES)}},
                                required=["name", "type"]),
    "PublishWebServiceRequest": _publish(required=True, co_publishers=True),
    # o16n: a development version (POST /services/{name}) claims no name, so it takes no coPublishers
    "PublishDevelopmentVersionRequest": _publish(required=True, co_publishers=False),
    # o16n: PATCH takes PublishWebServiceRequest's fields, each optional
    "PatchWebServiceRequest": _publish(required=False, co_publishers=True),
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
