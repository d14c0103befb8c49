"""Swagger 2.0 documents: the core API, and the one generated for each published service."""
from __future__ import annotations

import re

from . import models, services, types
from .auth import Principal

def _params(defs: list[dict]) -> dict:
    return {"type": "object", "properties": {
        d["name"]: {**types.JSON_SCHEMA[d["type"]], "description": d["type"]} for d in defs}}


def service_document(user: Principal, name: str, version: str) -> dict:
    ws = services.view(user, services.get(name, version, user))
    name, version = ws["name"], ws["version"]
    result = {"type": "object", "properties": {
        "success": {"type": "boolean"}, "errorMessage": {"type": "string"}, "consoleOutput": {"type": "string"},
        "changedFiles": {"type": "array", "items": {"type": "string"}},
        "outputParameters": {"$ref": "#/definitions/OutputParameters"}}}
    if ws["outputFileNames"]:
        result["properties"]["outputFiles"] = {"type": "object",
                                               "additionalProperties": {"type": "string", "format": "byte"}}
    default_error = {"description": "Error", "schema": {"$ref": "#/definitions/Error"}}
    return {
        "swagger": "2.0",
        "info": {"title": name, "description": ws["description"], "version": version},
        "schemes": ["http", "https"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "securityDefinitions": {"Bearer": {"type": "apiKey", "name": "Authorization", "in": "header"}},
        "tags": [{"name": name, "description": ws["description"]}, {"name": "User", "description": "Log in"}],
        "paths": {
            "/login": {"post": {
                "tags": ["User"], "operationId": "login", "summary": "Log in and get a bearer token",
                "parameters": [{"name": "loginRequest", "in": "body", "required": True,
                                "schema": {"$ref": "#/definitions/LoginRequest"}}],
                "responses": {"200": {"description": "OK", "schema": {"$ref": "#/definitions/AccessTokenResponse"}},
                              "default": default_error}}},
            f"/api/{name}/{version}": {"post": {
                "tags": [name], "operationId": ws["operationId"], "summary": f"Consume {name} {version}",
                "security": [{"Bearer": []}],
                "parameters": [{"name": "WebServiceParameters", "in": "body", "required": True,
                                "schema": {"$ref": "#/definitions/InputParameters"}}],
                "responses": {"200": {"description": "OK", "schema": {"$ref": "#/definitions/WebServiceResult"}},
                              "400": {"description": "Bad input", "schema": {"$ref": "#/definitions/Error"}},
                              "500": {"description": "Internal error", "schema": {"$ref": "#/definitions/Error"}},
                              "default": default_error}}},
        },
        "definitions": {
            "InputParameters": _params(ws["inputParameterDefinitions"]),
            "OutputParameters": _params(ws["outputParameterDefinitions"]),
            "WebServiceResult": result,
            **{m: models.DEFINITIONS[m] for m in ("LoginRequest", "AccessTokenResponse", "Error")},
        },
    }


def core_document() -> dict:
    """The core API, generated from the declared operations (routes, methods, contracts) and
    the wire models."""
    from .api import OPERATIONS

    paths: dict[str, dict] = {}
    for op in OPERATIONS:
        if not op.core:
            continue
        path = "/" + op.route
        entry: dict = {"tags": [op.tag], "operationId": op.operation_id, "summary": op.summary,
                       "parameters": [{"name": p, "in": "path", "required": True, "type": "string"}
                                      for p in re.findall(r"\{(\w+)\}", op.route)]}
        entry["parameters"] += [{"name": q, "in": "query", "required": True, "type": "string"} for q in op.query]
        if op.body == "octet":
            entry["consumes"] = ["application/octet-stream"]
            entry["parameters"].append({"name": "serializedObject", "in": "body", "required": True,
                                        "schema": {"type": "string", "format": "binary"}})
        elif op.body == "multipart":
            entry["consumes"] = ["multipart/form-data"]
            entry["parameters"].append({"name": "file", "in": "formData", "required": True, "type": "file"})
        elif op.body == "realtime":
            entry["consumes"] = ["multipart/form-data"]
            entry["parameters"] += [
                {"name": "model", "in": "formData", "required": op.method == "POST", "type": "file",
                 "description": "an ONNX model (also behind revoscalepy's 4-byte mark b'blob'), or a pickled "
                                "scikit-learn model, converted to ONNX in the sandbox"},
                {"name": "description", "in": "formData", "required": False, "type": "string"},
                {"name": "operationId", "in": "formData", "required": False, "type": "string"}]
        elif op.body:
            entry["parameters"].append({"name": op.body[0].lower() + op.body[1:], "in": "body", "required": True,
                                        "schema": {"$ref": f"#/definitions/{op.body}"}})
        ok: dict = {"description": "Success"}
        if op.returns:
            ok["schema"] = _schema(op.returns)
        if op.returns == "file":
            entry["produces"] = ["application/octet-stream"]
        entry["responses"] = {str(op.status): ok, **{
            str(code): {"description": _REASONS[code], "schema": {"$ref": "#/definitions/Error"}}
            for code in op.errors}}
        if op.authenticated:
            entry["security"] = [{"Bearer": []}]
        paths.setdefault(path, {})[op.method.lower()] = entry
    return {
        "swagger": "2.0",
        "info": {"title": "o16n", "version": "9.3.0",
                 "description": "ML Server 9.x operationalization API, served by Azure Functions"},
        "schemes": ["http", "https"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "securityDefinitions": {"Bearer": {"type": "apiKey", "name": "Authorization", "in": "header"}},
        "paths": paths,
        "definitions": models.DEFINITIONS,
    }


_REASONS = {400: "Bad request", 401: "Missing, invalid or expired token", 403: "Not allowed: owned by another user, or the role does not allow it",
            404: "Not found", 409: "Already exists, or changed at the same time",
            415: "The body is not of the media type the operation takes",
            429: "Too many failed logins: wait Retry-After seconds", 501: "Not on Azure Functions",
            503: "Storage (or another part) is not answering: try again after Retry-After seconds"}


def _schema(returns: str) -> dict:
    if returns == "file":
        return {"type": "string", "format": "binary"}
    many = returns.startswith("[")
    name = returns.strip("[]")
    one = {"type": "string"} if name == "string" else {"$ref": f"#/definitions/{name}"}
    return {"type": "array", "items": one} if many else one
