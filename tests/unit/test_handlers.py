"""Handlers called the way the Functions worker calls them, with a real func.HttpRequest.
None of these reach storage: they are refused before it."""
import json

import azure.functions as func
import pytest

from functions import consume, services, sessions, snapshots, status
from function_app import app
from shared import auth


def request(method, url, *, body=b"", headers=None, route_params=None):
    headers = {**({"Content-Type": "application/json"} if body else {}), **(headers or {})}
    return func.HttpRequest(method, url, body=body, headers=headers, route_params=route_params or {})


def token(user="alice"):
    return {"Authorization": "Bearer " + jwt_for(user)}


def jwt_for(user, age=0):
    import time

    import jwt

    from shared.config import get_settings

    from shared import accounts

    now, key = int(time.time()) - age, get_settings().token_signing_key
    family = f"unit{user}"
    auth._remember(family, 1, False)  # as if this instance had just logged the user in
    accounts.remember_epoch(user, 0)
    cv = accounts.credential_version(accounts.find(user), key, 0)
    return jwt.encode({"iss": auth.ISSUER, "aud": auth.AUDIENCE, "sub": user, "iat": now, "nbf": now,
                       "exp": now + 60, "fam": family, "gen": 1, "cv": cv}, key, algorithm="HS256")


def body_of(resp):
    return json.loads(resp.get_body())


def test_every_function_is_registered_with_an_ml_server_route():
    app.functions_bindings = None
    routes = {f.get_trigger().route for f in app.get_functions() if f.is_http_function()}
    assert {"login", "status", "sessions", "sessions/{id}/execute", "sessions/{id}/snapshot", "snapshots/{id}",
            "services/{name}/{version}", "api/{name}/{version}", "api/{name}/{version}/swagger.json"} <= routes


@pytest.mark.parametrize("handler, method, url", [
    (status.status, "GET", "/status"),
    (sessions.list_sessions, "GET", "/sessions"),
    (snapshots.list_snapshots, "GET", "/snapshots"),
    (services.get_all_web_services, "GET", "/services"),
    (consume.consume_web_service, "POST", "/api/a/b"),
])
def test_calls_without_a_token_get_401_with_a_bearer_challenge(handler, method, url):
    import asyncio
    import inspect

    resp = handler(request(method, url))
    if inspect.isawaitable(resp):  # consume is async: it runs on the event loop
        resp = asyncio.run(resp)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert "POST /login" in body_of(resp)["message"]


@pytest.mark.parametrize("bad", ["Bearer", "Basic abc", "Bearer not.a.jwt", "Bearer " + "e" * 40])
def test_malformed_tokens_get_401(bad):
    assert sessions.list_sessions(request("GET", "/sessions", headers={"Authorization": bad})).status_code == 401


def test_a_token_signed_with_another_key_gets_401():
    import time

    import jwt

    now = int(time.time())
    forged = jwt.encode({"iss": auth.ISSUER, "aud": auth.AUDIENCE, "sub": "admin", "iat": now, "nbf": now,
                         "exp": now + 60}, "another-key-another-key-another-key!!", algorithm="HS256")
    resp = sessions.list_sessions(request("GET", "/sessions", headers={"Authorization": f"Bearer {forged}"}))
    assert resp.status_code == 401


def test_an_expired_token_gets_401_saying_so():
    old = jwt_for("alice", age=7200)
    resp = sessions.list_sessions(request("GET", "/sessions", headers={"Authorization": f"Bearer {old}"}))
    assert resp.status_code == 401 and "expired" in body_of(resp)["message"]


@pytest.mark.parametrize("raw, fragment", [
    (b"{", "not valid JSON"), (b"[1]", "must be an object"), (b'{"a": NaN}', "NaN"),
    (b'{"a":1,"a":2}', "repeats the key"), (b"\xff\xfe", "UTF-8"), (b"[" * 100000, "nested too deeply"),
    (b"", "is required"),
])
def test_bad_json_bodies_get_400_never_500(raw, fragment):
    resp = sessions.create_session(request("POST", "/sessions", body=raw, headers=token()))
    assert resp.status_code == 400
    assert fragment in body_of(resp)["message"]
    assert "Traceback" not in resp.get_body().decode()


@pytest.mark.parametrize("body", [{"name": "x"}, {"name": "x", "runtimeType": "R"}, {"runtimeType": 5}])
def test_create_session_refuses_anything_but_python(body):
    resp = sessions.create_session(request("POST", "/sessions", body=json.dumps(body).encode(), headers=token()))
    assert resp.status_code == 400 and "Python" in body_of(resp)["message"]


@pytest.mark.parametrize("route_params, body, fragment", [
    ({"name": "Iris", "version": "v1"}, {"runtimeType": "Python"}, "'code' is required"),
    ({"name": "Iris", "version": "v1"}, {"code": "x=1"}, "runtimeType"),
    ({"name": "bad name!", "version": "v1"}, {"code": "x=1", "runtimeType": "Python"}, "not allowed"),
    ({"name": "Iris", "version": "v#1"}, {"code": "x=1", "runtimeType": "Python"}, "not allowed"),
    ({"name": "Iris\n", "version": "v1"}, {"code": "x=1", "runtimeType": "Python"}, "not allowed"),
    ({"name": "Iris", "version": "v1\n"}, {"code": "x=1", "runtimeType": "Python"}, "not allowed"),
    ({"name": "Iris", "version": "v1"}, {"code": "x=1", "runtimeType": "Python", "outputFileNames": ["a.csv\n"]},
     "not allowed"),
    ({"name": "Iris", "version": "v1"},
     {"code": "x=1", "runtimeType": "Python", "inputParameterDefinitions": [{"name": "x", "type": "float"}]},
     "type 'float'"),
])
def test_publish_refuses_bad_requests_with_400_naming_the_problem(route_params, body, fragment):
    resp = services.publish_web_service_version(request("POST", "/services/x/y", body=json.dumps(body).encode(),
                                                        headers=token(), route_params=route_params))
    assert resp.status_code == 400 and fragment in body_of(resp)["message"]


def test_unknown_session_ids_are_404_before_storage_is_asked():
    resp = sessions.execute_code(request("POST", "/sessions/x/execute", body=b'{"code":"1"}', headers=token(),
                                         route_params={"id": "../../etc"}))
    assert resp.status_code == 404


def test_unsupported_content_type_gets_415():
    resp = sessions.create_session(request("POST", "/sessions", body=b"<x/>",
                                           headers={**token(), "Content-Type": "application/xml"}))
    assert resp.status_code == 415


def test_a_body_over_the_size_cap_gets_413_before_it_is_parsed():
    from shared.config import get_settings

    big = b'{"code": "' + b"x" * get_settings().max_request_bytes + b'"}'
    resp = sessions.create_session(request("POST", "/sessions", body=big, headers=token()))
    assert resp.status_code == 413 and "larger than" in body_of(resp)["message"]


@pytest.mark.parametrize("setting, value, named", [
    ("TOKEN_SIGNING_KEY", "too-short-secret-value", "TOKEN_SIGNING_KEY"),
    ("LOCAL_ADMIN_PASSWORD", "tiny-pw", "LOCAL_ADMIN_PASSWORD"),
    ("LOCAL_ROLES", "alice:Wizard-of-oz", "LOCAL_ROLES"),
    ("EXECUTION_TIMEOUT_SECONDS", "never", "EXECUTION_TIMEOUT_SECONDS"),
])
def test_a_wrong_setting_answers_every_request_503_naming_it_never_its_value(monkeypatch, caplog, setting, value,
                                                                            named):
    """Azure starts the app whatever its settings: every request says what to fix, once in the log."""
    import asyncio
    import inspect
    import logging

    from shared import http
    from tests.conftest import reset_caches

    monkeypatch.setenv(setting, value)
    monkeypatch.setattr(http, "_misconfigured_logged", False)
    reset_caches()
    try:
        with caplog.at_level(logging.INFO, logger="o16n"):
            for handler, method, url in ((status.status, "GET", "/status"), (sessions.list_sessions, "GET", "/sessions"),
                                         (consume.consume_web_service, "POST", "/api/a/b")):
                resp = handler(request(method, url))
                if inspect.isawaitable(resp):
                    resp = asyncio.run(resp)
                body = body_of(resp)
                assert resp.status_code == 503 and body["error"] == "not_configured", body
                assert named in body["message"] and value not in resp.get_body().decode()
                assert int(resp.headers["Retry-After"]) >= 1
        logged = [r.getMessage() for r in caplog.records if named in r.getMessage()]
        assert len(logged) == 1 and value not in logged[0]
    finally:
        monkeypatch.undo()
        reset_caches()
