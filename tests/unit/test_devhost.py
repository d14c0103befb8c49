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



@pytest.mark.parametrize("template, matching, other", [
    ("{page:maxlength(0)?}", ["/", ""], ["/x", "/login", "/ui/app.js"]),  # the site root and nothing else
    ("codes/{c:maxlength(3)}", ["/codes/abc", "/codes/a"], ["/codes/abcd"]),
    ("codes/{c:minlength(2)}", ["/codes/ab", "/codes/abcdef"], ["/codes/a"]),
    ("codes/{c:length(2)}", ["/codes/ab"], ["/codes/a", "/codes/abc"]),
    ("codes/{c:length(2,3)}", ["/codes/ab", "/codes/abc"], ["/codes/a", "/codes/abcd"]),
])
def test_length_constraints_follow_asp_net(template, matching, other):
    regex, _ = compile_route(template)
    assert all(regex.match(p) for p in matching) and not any(regex.match(p) for p in other)


def test_the_web_page_takes_the_root_and_leaves_every_other_path_as_it_was():
    from function_app import app

    host = FunctionHost(app)
    assert host.match("GET", "/")[0].name == "web_page"
    assert host.match("GET", "/ui/app.js")[0].name == "web_asset"
    assert host.match("GET", "/ui/config.json")[0].name == "web_config"
    # still 404: a method the API does not take, a path it does not have, a nested /ui path
    assert host.match("GET", "/login") is None and host.match("GET", "/nothing") is None
    assert host.match("POST", "/") is None and host.match("GET", "/ui/a/b") is None

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


def _queue_app(handler, *, queue_name="%WORK_QUEUE%", connection="AzureWebJobsStorage"):
    bp = func.Blueprint()
    bp.queue_trigger(arg_name="msg", queue_name=queue_name, connection=connection)(handler)
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    app.register_functions(bp)
    return app


_QUEUE_ENV = {"WORK_QUEUE": "Work-Items", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}


def _runner(app, tmp_path, environ=_QUEUE_ENV, host_json=None):
    from devhost.queues import QueueRunner

    path = tmp_path / "host.json"
    path.write_text(json.dumps(host_json or {"version": "2.0"}))
    return QueueRunner(app, host_json=path, environ=environ)


def test_queue_functions_resolve_their_queue_and_connection_from_settings_as_the_host_does(tmp_path):
    def ok(msg: func.QueueMessage, context: func.Context) -> None:
        pass

    runner = _runner(_queue_app(ok), tmp_path)
    [f] = runner.functions
    assert (f.name, f.queue, f.poison_queue, f.kind, f.wants_context) == ("ok", "work-items", "work-items-poison",
                                                                          "message", True)
    assert "UseDevelopmentStorage" not in repr(f)  # the connection string is never shown
    # no connection name means AzureWebJobsStorage; AzureWebJobs<name> is looked up before <name>
    assert _runner(_queue_app(ok, connection=""), tmp_path).functions[0].connection == "UseDevelopmentStorage=true"
    env = {**_QUEUE_ENV, "AzureWebJobsJobs": "UseDevelopmentStorage=true;A=1", "Jobs": "UseDevelopmentStorage=true"}
    assert _runner(_queue_app(ok, connection="Jobs"), tmp_path, env).functions[0].connection.endswith("A=1")


def test_a_queue_handler_whose_parameters_do_not_match_its_trigger_fails_at_start(tmp_path):
    from devhost.queues import QueueSetupError

    def extra(msg: func.QueueMessage, options) -> None:
        pass

    def renamed(message: func.QueueMessage) -> None:
        pass

    def missing() -> None:
        pass

    with pytest.raises(QueueSetupError, match=r"extra: parameters \['options'\] are declared in Python but not in"):
        _runner(_queue_app(extra), tmp_path)
    with pytest.raises(QueueSetupError, match=r"renamed: parameters \['message'\] are declared in Python"):
        _runner(_queue_app(renamed), tmp_path)
    with pytest.raises(QueueSetupError, match=r"missing: parameter 'msg' \(the queue trigger\) is declared in the "
                                              "function definition but not in Python"):
        _runner(_queue_app(missing), tmp_path)


def test_a_queue_handler_with_a_wrong_annotation_fails_at_start(tmp_path):
    from devhost.queues import QueueSetupError

    def wrong(msg: int) -> None:
        pass

    with pytest.raises(QueueSetupError, match=r'wrong: type of msg binding "queueTrigger" does not match .*int'):
        _runner(_queue_app(wrong), tmp_path)

    def text(msg: str) -> None:  # str and bytes are the worker's generic binding: the body
        pass

    assert _runner(_queue_app(text), tmp_path).functions[0].kind == "str"


def test_a_missing_queue_setting_or_connection_fails_at_start_naming_the_setting(tmp_path):
    from devhost.queues import QueueSetupError

    def ok(msg: func.QueueMessage) -> None:
        pass

    with pytest.raises(QueueSetupError, match="names setting WORK_QUEUE, which is not set"):
        _runner(_queue_app(ok), tmp_path, {"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    with pytest.raises(QueueSetupError, match=r"setting AzureWebJobsStorage .* is not set.*__queueServiceUri"):
        _runner(_queue_app(ok, connection=""), tmp_path, {"WORK_QUEUE": "w1q"})
    with pytest.raises(QueueSetupError, match=r"setting Jobs .*Jobs__queueServiceUri\) work in Azure only"):
        _runner(_queue_app(ok, connection="Jobs"), tmp_path,
                {"WORK_QUEUE": "w1q", "Jobs__queueServiceUri": "https://x.queue.core.windows.net"})
    with pytest.raises(QueueSetupError, match="not a valid queue name"):
        _runner(_queue_app(ok), tmp_path, {**_QUEUE_ENV, "WORK_QUEUE": "a--b"})


def test_queue_options_come_from_host_json_with_the_hosts_defaults(tmp_path):
    from devhost.queues import QueueOptions, QueueSetupError, options_of

    path = tmp_path / "host.json"
    path.write_text("{}")
    assert options_of(path) == QueueOptions()  # batch 16, threshold 8, 1 min, 0 s, 5, base64
    path.write_text(json.dumps({"extensions": {"Queues": {"BatchSize": 6, "maxPollingInterval": "00:01:30.5",
                                                          "visibilityTimeout": "1.00:00:00"}}}))
    assert options_of(path) == QueueOptions(batch_size=6, new_batch_threshold=3, max_polling_interval=90.5,
                                            visibility_timeout=86400.0)
    assert options_of(devhost_main.ROOT / "host.json") == QueueOptions(
        batch_size=4, new_batch_threshold=2, max_polling_interval=2.0, visibility_timeout=5.0)
    for bad, key in [({"batchSize": 33}, "batchSize"), ({"maxPollingInterval": "2000"}, "maxPollingInterval"),
                     ({"maxPollingInterval": "00:00:00.05"}, "maxPollingInterval"),
                     ({"maxDequeueCount": 0}, "maxDequeueCount"), ({"messageEncoding": "utf8"}, "messageEncoding")]:
        path.write_text(json.dumps({"extensions": {"queues": bad}}))
        with pytest.raises(QueueSetupError, match=key):
            options_of(path)


def test_queue_runner_settings_are_checked_at_start(tmp_path):
    from devhost.queues import QueueSetupError

    def ok(msg: func.QueueMessage) -> None:
        pass

    runner = _runner(_queue_app(ok), tmp_path, {**_QUEUE_ENV, "DEVHOST_QUEUE_INVISIBILITY_SECONDS": "30",
                                                "DEVHOST_QUEUE_SHUTDOWN_SECONDS": "0.5"})
    assert (runner.invisibility, runner.grace) == (30, 0.5)
    assert _runner(_queue_app(ok), tmp_path).invisibility == 600  # the host's 10 minutes
    with pytest.raises(QueueSetupError, match="DEVHOST_QUEUE_INVISIBILITY_SECONDS"):
        _runner(_queue_app(ok), tmp_path, {**_QUEUE_ENV, "DEVHOST_QUEUE_INVISIBILITY_SECONDS": "0.5"})


def test_an_empty_queue_is_polled_with_a_growing_randomised_backoff_reset_by_a_message():
    from devhost.queues import _Backoff

    backoff = _Backoff(0.1, 2.0)
    delays = [backoff.next(False) for _ in range(8)]
    assert 0.17 < delays[0] < 0.23 and all(b > a for a, b in zip(delays, delays[1:5]))
    assert delays[-1] == 2.0  # maxPollingInterval
    assert backoff.next(True) == 0.1 and 0.17 < backoff.next(False) < 0.23


def test_lifespan_shutdown_calls_the_hooks_before_the_thread_pool_stops():
    import asyncio

    host = FunctionHost(_app())
    seen = []
    host.on_shutdown.append(lambda: seen.append(host.executor._shutdown))
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive():
        return messages.pop(0)

    async def send(msg):
        pass

    asyncio.run(host({"type": "lifespan"}, receive, send))
    assert seen == [False] and host.executor._shutdown


@pytest.mark.parametrize("raw, value", [(b"/things/%2541", "%41"), (b"/things/a%20b", "a b"),
                                        (b"/things/a%2Fb", "a%2Fb"), (b"/things/a%2fb", "a%2fb"),
                                        (b"/things/%C3%A9t%C3%A9", "\u00e9t\u00e9")])
def test_route_values_are_decoded_once_and_an_encoded_slash_stays_as_asp_net_keeps_it(raw, value):
    from urllib.parse import unquote

    scope = {"type": "http", "method": "GET", "path": unquote(raw.decode()), "raw_path": raw, "query_string": b"",
             "client": ("127.0.0.1", 5000), "headers": []}
    sent, _ = _drive(FunctionHost(_app()), scope, [b""])
    assert sent[0]["status"] == 200 and sent[1]["body"].decode() == value


def test_the_thread_pool_is_sized_as_the_python_worker_sizes_it(monkeypatch):
    import os

    from devhost.host import worker_threads

    monkeypatch.delenv("PYTHON_THREADPOOL_THREAD_COUNT", raising=False)
    assert worker_threads() == min(32, (os.cpu_count() or 1) + 4)
    monkeypatch.setenv("PYTHON_THREADPOOL_THREAD_COUNT", "3")
    assert worker_threads() == 3 and FunctionHost(_app()).executor._max_workers == 3
