"""The Swagger 2.0 document generated for each published service."""
from __future__ import annotations

from . import services, types
from .auth import Principal

_TOKEN = {"type": "object", "properties": {
    "token_type": {"type": "string"}, "access_token": {"type": "string"}, "expires_in": {"type": "integer"},
    "expires_on": {"type": "string"}, "refresh_token": {"type": "string"}}}
_ERROR = {"type": "object", "properties": {"message": {"type": "string"}, "exceptionType": {"type": "string"},
                                          "error": {"type": "string"}, "correlationId": {"type": "string"}}}


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
            "LoginRequest": {"type": "object", "properties": {"username": {"type": "string"},
                                                              "password": {"type": "string"}}},
            "AccessTokenResponse": _TOKEN,
            "Error": _ERROR,
        },
    }
