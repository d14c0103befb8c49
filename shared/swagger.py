"""Swagger 2.0 documents: the core API, and the one generated for each published service. Both
are generated from the declared operations (shared.api), so every status an operation answers,
and the shape of everything it takes, is in the document."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from . import ids, models, services, types
from .auth import Principal
from .config import get_settings

if TYPE_CHECKING:
    from .api import Operation

_REASONS = {
    400: "Bad request: the message names what is wrong",
    401: "Missing, invalid or expired token",
    403: "Not allowed: the role does not allow it, or the name or resource belongs to another user",
    404: "Not found (also what another user's session, snapshot or development version is)",
    409: "Already exists, changed by another request at the same time, or busy: try again",
    412: "If-Match names an ETag that is no longer the version's",
    413: "Too large: the request body, or what it would store",
    415: "The body is not of the media type the operation takes",
    422: "A stored workspace does not match its seal: it was not loaded",
    429: "Too many failed logins: wait Retry-After seconds",
    501: "Not on Azure Functions",
    503: "Storage or a worker is not answering: try again after Retry-After seconds",
}
_RETRY_AFTER = {"type": "integer", "description": "seconds to wait before trying again"}
_ERROR_HEADERS = {
    401: {"WWW-Authenticate": {"type": "string", "x-required": True}},
    409: {"Retry-After": _RETRY_AFTER},  # when the session or its worker is busy
    429: {"Retry-After": {**_RETRY_AFTER, "x-required": True}},
    503: {"Retry-After": {**_RETRY_AFTER, "x-required": True}},
}
# Path parameters by name: what the server checks them against
_PATH = {"name": models.NAME, "version": models.NAME, "id": models.UUID, "snapshotId": models.UUID,
         "objectName": models.OBJECT_NAME, "fileName": models.NAME, "executionId": models.UUID,
         "index": {"type": "integer", "minimum": 0, "maximum": 999999999, "description": "the record's position "
                   "in the batch, from 0"}}
_PARTIAL = {"type": "boolean", "description": "the results of the records scored so far (else none until all are)"}
# Optional query parameters by name
QUERY = {
    "parallelCount": {"type": "integer", "minimum": 1, "description": "records scored at once (default 10)"},
    "showPartialResults": _PARTIAL,
    "showPartialResult": {**_PARTIAL, "description": "the same, as ML Server's Python client spells it"},
}
HEADERS = {
    "If-Match": {"name": "If-Match", "in": "header", "required": False, "type": "string",
                 "description": "the version's ETag as last read (GET or PATCH): the request is refused with 412 "
                                "when the version changed since"},
    "Idempotency-Key": {"name": "Idempotency-Key", "in": "header", "required": False, "type": "string",
                        "pattern": f"^(?:{ids.IDEMPOTENCY_KEY})$", "maxLength": ids.IDEMPOTENCY_KEY_MAX,
                        "description": "a key of the client's choosing: a request retried with the same key makes "
                                       "one resource, and answers what the first one did"},
}
_AUTH = {"securityDefinitions": {"Bearer": {"type": "apiKey", "name": "Authorization", "in": "header"}}}


def _path_parameter(name: str) -> dict:
    schema = _PATH[name]
    return {"name": name, "in": "path", "required": True,
            **{k: schema[k] for k in ("type", "pattern", "maxLength", "minimum", "maximum", "description")
               if k in schema}}


def _query(name: str) -> dict:
    if name == "parallelCount":  # its bound is a setting
        return {**QUERY[name], "maximum": get_settings().batch_max_parallel}
    return QUERY[name]


def operation_entry(op: Operation, *, body_schema: dict | None = None, path: str | None = None,
                    operation_id: str | None = None, tags: list[str] | None = None) -> dict:
    """The swagger operation object of `op`; a service's document gives its own consume body,
    literal path and operationId."""
    params = [_path_parameter(p) for p in re.findall(r"\{(\w+)\}", path if path is not None else op.route)]
    params += [{"name": q, "in": "query", "required": True, "type": "string", "minLength": 1} for q in op.query]
    params += [{"name": q, "in": "query", "required": False, **_query(q)} for q in op.optional_query]
    params += [HEADERS[h] for h in op.headers]
    entry: dict = {"tags": tags or [op.tag], "operationId": operation_id or op.operation_id, "summary": op.summary}
    if op.body == "octet":
        entry["consumes"] = ["application/octet-stream"]
        params.append({"name": "serializedObject", "in": "body", "required": True,
                       "description": "the object serialized with dill",
                       "schema": {"type": "string", "format": "binary"}})
    elif op.body == "multipart":
        entry["consumes"] = ["multipart/form-data"]
        params.append({"name": "file", "in": "formData", "required": True, "type": "file",
                       "description": f"the file; its name (of the part) as a session file name: {ids.NAME}"})
    elif op.body == "realtime":
        entry["consumes"] = ["multipart/form-data"]
        params += [
            {"name": "model", "in": "formData", "required": op.method == "POST", "type": "file",
             "description": "an ONNX model (also behind revoscalepy's 4-byte mark b'blob'), or a pickled "
                            "scikit-learn model, converted to ONNX in the sandbox"},
            {"name": "description", "in": "formData", "required": False, "type": "string",
             "maxLength": ids.TEXT_MAX},
            {"name": "operationId", "in": "formData", "required": False, **models.matching(
                ids.IDENTIFIER, ids.IDENTIFIER_MAX, empty=True)}]
    elif op.body:
        params.append({"name": op.body[0].lower() + op.body[1:], "in": "body", "required": op.body_required,
                       "schema": body_schema or {"$ref": f"#/definitions/{op.body}"}})
    entry["parameters"] = params
    ok: dict = {"description": "Success"}
    if op.returns:
        ok["schema"] = _schema(op.returns)
    headers = {}
    if op.etag:
        headers["ETag"] = {"type": "string", "description": "send it back as If-Match to change or delete "
                                                             "this version only if nobody changed it since"}
    if op.returns == "file":
        # errors are JSON all the same
        entry["produces"] = [op.produces, "application/json"]
        headers["Content-Disposition"] = {"type": "string"}
    if headers:
        ok["headers"] = headers
    entry["responses"] = {str(op.status): ok}
    for code in op.error_statuses:
        entry["responses"][str(code)] = {"description": _REASONS[code], "schema": {"$ref": "#/definitions/Error"},
                                         **({"headers": _ERROR_HEADERS[code]} if code in _ERROR_HEADERS else {})}
    if op.authenticated:
        entry["security"] = [{"Bearer": []}]
    return entry


def _params(defs: list[dict], *, inputs: bool) -> dict:
    """A service's inputs (all required, nothing else taken) or outputs (null for NaN or none)."""
    props = {}
    for d in defs:
        schema = {**types.JSON_SCHEMA[d["type"]], "description": d["type"]}
        props[d["name"]] = schema if inputs else {**schema, "x-nullable": True}
    out: dict = {"type": "object", "properties": props}
    if inputs:
        out["additionalProperties"] = False
        if defs:
            out["required"] = [d["name"] for d in defs]
    return out


def service_document(user: Principal, name: str, version: str) -> dict:
    from .api import OPERATIONS

    ops = {op.operation_id: op for op in OPERATIONS}
    ws = services.view(user, services.get(name, version, user))
    name, version = ws["name"], ws["version"]
    result = {"type": "object", "properties": {
        "success": {"type": "boolean"}, "errorMessage": {"type": "string"}, "consoleOutput": {"type": "string"},
        "changedFiles": {"type": "array", "items": {"type": "string"}},
        "outputParameters": {"$ref": "#/definitions/OutputParameters"}}}
    if ws["outputFileNames"]:
        result["properties"]["outputFiles"] = {
            "type": "object", "additionalProperties": {"type": "string", "format": "byte", "x-nullable": True}}
    consume = operation_entry(ops["consumeWebService"], path=f"/api/{name}/{version}", tags=[name],
                              operation_id=ws["operationId"],
                              body_schema={"$ref": "#/definitions/InputParameters"})
    consume["summary"] = f"Consume {name} {version}"
    # an empty body is no inputs: refused only when the service declares some
    consume["parameters"][0].update(name="WebServiceParameters", required=bool(ws["inputParameterDefinitions"]))
    consume["responses"]["200"] = {"description": "OK", "schema": {"$ref": "#/definitions/WebServiceResult"}}
    return {
        "swagger": "2.0",
        "info": {"title": name, "description": ws["description"], "version": version},
        "schemes": ["http", "https"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        **_AUTH,
        "tags": [{"name": name, "description": ws["description"]}, {"name": "User", "description": "Log in"}],
        "paths": {
            "/login": {"post": operation_entry(ops["login"])},
            f"/api/{name}/{version}": {"post": consume},
            **_batch_paths(ops, name, version),
        },
        "definitions": {
            "InputParameters": _params(ws["inputParameterDefinitions"], inputs=True),
            "OutputParameters": _params(ws["outputParameterDefinitions"], inputs=False),
            "WebServiceResult": result,
            **_BATCH_DEFINITIONS,
            **{m: models.DEFINITIONS[m] for m in ("LoginRequest", "AccessTokenResponse", "Error")},
        },
    }


def _batch_paths(ops: dict[str, Operation], name: str, version: str) -> dict:
    """The batch operations of the service, on its literal path."""
    paths: dict[str, dict] = {}
    for op in ops.values():
        if op.route.startswith("api/{name}/{version}/batch"):
            path = "/" + op.route.replace("{name}", name).replace("{version}", version)
            body = {"type": "array", "minItems": 1, "items": {"$ref": "#/definitions/InputParameters"}}
            paths.setdefault(path, {})[op.method.lower()] = operation_entry(
                op, path=path, tags=[name], body_schema=body if op.body else None)
    return paths


_BATCH_DEFINITIONS = {
    "StartBatchExecutionResponse": {"type": "object", "properties": {
        "batchExecutionId": {"type": "string"},
        "BatchExecutionId": {"type": "string", "description": "the same, as ML Server's Python client reads it"}}},
    "BatchWebServiceResult": {"type": "object", "properties": {
        "state": {"type": "string", "enum": ["Pending", "InProgress", "Complete", "Failed"],
                  "description": "Complete: every record was scored (each result says whether it succeeded); "
                                 "Failed: some records could not be scored (their results say why)"},
        "completedItemCount": {"type": "integer"}, "totalItemCount": {"type": "integer"},
        "batchExecutionResults": {"type": "array", "items": {"$ref": "#/definitions/WebServiceResult"},
                                  "description": "in input order: all of them once the batch is done; before, "
                                                 "with showPartialResults, those scored so far up to the first "
                                                 "that is not"}}},
}


def core_document() -> dict:
    """The core API, generated from the declared operations (routes, methods, contracts) and
    the wire models."""
    from .api import OPERATIONS

    paths: dict[str, dict] = {}
    for op in OPERATIONS:
        if op.core:
            paths.setdefault("/" + op.route, {})[op.method.lower()] = operation_entry(op)
    return {
        "swagger": "2.0",
        "info": {"title": "o16n", "version": "9.3.0",
                 "description": "ML Server 9.x operationalization API, served by Azure Functions"},
        "schemes": ["http", "https"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        **_AUTH,
        "paths": paths,
        "definitions": models.DEFINITIONS,
    }


def _schema(returns: str) -> dict:
    if returns == "file":
        return {"type": "string", "format": "binary"}
    many = returns.startswith("[")
    name = returns.strip("[]")
    one = {"type": "string"} if name == "string" else {"$ref": f"#/definitions/{name}"}
    return {"type": "array", "items": one} if many else one
