"""The local host follows Azure's routing rules and Core Tools' settings loading."""
import json

import azure.functions as func
import pytest

from devhost import __main__ as devhost_main
from devhost.host import FunctionHost, compile_route, index
from shared import passwords


def test_route_templates_follow_asp_net_rules():
    regex, _ = compile_route("services/{name}/{version}")
    m = regex.match("/Services/Iris/V1.0")
    assert m and m.group("name") == "Iris" and m.group("version") == "V1.0"
    assert not regex.match("/services/Iris")
    regex, _ = compile_route("items/{id:int}/{opt?}")
    assert regex.match("/items/42") and regex.match("/items/42/x") and not regex.match("/items/abc")
    regex, _ = compile_route("files/{*path}")
    assert regex.match("/files/a/b/c").group("path") == "a/b/c"


def _app():
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="things/{id}", methods=["GET"])
    def get_thing(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(req.route_params["id"])

    @app.route(route="things/latest", methods=["GET"])
    def latest(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("latest")

    return app


def test_literal_routes_win_and_a_wrong_method_is_not_matched():
    host = FunctionHost(_app())
    route, params = host.match("GET", "/things/latest")
    assert route.name == "latest"
    route, params = host.match("GET", "/things/7")
    assert route.name == "get_thing" and params == {"id": "7"}
    assert host.match("POST", "/things/7") is None


def test_a_handler_whose_parameters_do_not_match_its_bindings_fails_at_start():
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="x")
    def bad(req: func.HttpRequest, extra) -> func.HttpResponse:
        return func.HttpResponse("")

    with pytest.raises(RuntimeError, match="extra"):
        index(app)


def test_admin_routes_are_refused_as_the_functions_host_reserves_them():
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="admin/things")
    def adm(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("")

    with pytest.raises(RuntimeError, match="reserved"):
        index(app)


def test_local_settings_values_do_not_override_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"Values": {"O16N_T_A": "from-file", "O16N_T_B": "from-file"}}))
    monkeypatch.setenv("O16N_T_A", "from-env")
    monkeypatch.delenv("O16N_T_B", raising=False)
    devhost_main.load_settings(path)
    import os
    assert os.environ["O16N_T_A"] == "from-env" and os.environ["O16N_T_B"] == "from-file"
    monkeypatch.delenv("O16N_T_B")


def test_run_generates_missing_secrets_into_local_settings(tmp_path, monkeypatch):
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps({"Values": {"TOKEN_SIGNING_KEY": "change-me", "SNAPSHOT_SIGNING_KEY": "change-me",
                                             "LOCAL_ADMIN_PASSWORD": ""}}))
    target = tmp_path / "local.settings.json"
    monkeypatch.setattr(devhost_main, "SAMPLE", sample)
    monkeypatch.setattr(devhost_main, "SETTINGS", target)
    for key in ("TOKEN_SIGNING_KEY", "SNAPSHOT_SIGNING_KEY", "LOCAL_ADMIN_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    password = devhost_main.prepare_settings()
    values = json.loads(target.read_text())["Values"]
    # Only the hash is written; the password is returned to be printed once.
    assert password and len(password) >= 12 and password not in target.read_text()
    assert passwords.verify(values["LOCAL_ADMIN_PASSWORD"], password)
    assert len(values["TOKEN_SIGNING_KEY"]) >= 32 and values["TOKEN_SIGNING_KEY"] != values["SNAPSHOT_SIGNING_KEY"]
    assert devhost_main.prepare_settings() is None  # a second run keeps the password it made
    assert json.loads(target.read_text())["Values"] == values


def test_a_short_password_stops_the_start_with_the_setting_named_and_no_traceback():
    import os
    import subprocess
    import sys

    env = {**os.environ, "LOCAL_ADMIN_PASSWORD": "short"}
    out = subprocess.run([sys.executable, "-m", "devhost", "serve", "--port", "9"], cwd=devhost_main.ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "LOCAL_ADMIN_PASSWORD" in out.stderr and "12 characters" in out.stderr and "Traceback" not in out.stderr


def _drive(host, scope, bodies):
    import asyncio

    sent, received = [], []

    async def receive():
        chunk = bodies.pop(0)
        received.append(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(bodies)}

    async def send(msg):
        sent.append(msg)

    asyncio.run(host(scope, receive, send))
    return sent, received


def test_a_body_over_the_limit_is_413_before_it_is_all_read():
    host = FunctionHost(_app(), max_body_bytes=1000)
    scope = {"type": "http", "method": "GET", "path": "/things/7", "headers": [], "query_string": b""}
    sent, received = _drive(host, scope, [b"x" * 600, b"x" * 600, b"x" * 600, b"x" * 600])
    assert sent[0]["status"] == 413 and len(received) == 2


def test_the_peer_address_is_appended_to_x_forwarded_for_as_azure_does():
    seen = {}
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="who", methods=["GET"])
    def who(req: func.HttpRequest) -> func.HttpResponse:
        seen["xff"] = req.headers.get("X-Forwarded-For")
        return func.HttpResponse("")

    scope = {"type": "http", "method": "GET", "path": "/who", "query_string": b"", "client": ("192.0.2.9", 5000),
             "headers": [(b"x-forwarded-for", b"10.0.0.1")]}
    sent, _ = _drive(FunctionHost(app), scope, [b""])
    assert sent[0]["status"] == 200 and seen["xff"] == "10.0.0.1, 192.0.2.9"


def test_routes_are_looked_up_by_first_segment_and_keep_their_order():
    app = _app()

    @app.route(route="{kind}/x", methods=["GET"])
    def any_x(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("")

    host = FunctionHost(app)
    assert host.match("GET", "/THINGS/x")[0].name == "get_thing"  # a literal first segment still ranks first
    assert host.match("GET", "/other/x") == (host.match("GET", "/other/x")[0], {"kind": "other"})
    assert host.match("GET", "/other/x")[0].name == "any_x"
    assert host.match("GET", "/nothing") is None
