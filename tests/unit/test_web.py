"""The web page's handlers (functions/web.py), called as the worker calls them: what they serve,
the headers every file carries, and what they refuse."""
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import azure.functions as func
import pytest

from functions import web as handlers
from shared import web
from shared.config import get_settings

ROOT = Path(__file__).resolve().parents[2]
TENANT, API, SPA = "11111111-2222-3333-4444-555555555555", "api://o16n-api", "66666666-7777-8888-9999-000000000000"


def get(url, route_params=None):
    return func.HttpRequest("GET", url, body=b"", headers={}, route_params=route_params or {})


def asset(name):
    return handlers.web_asset(get(f"/ui/{name}", {"name": name}))


@pytest.fixture
def entra(monkeypatch):
    monkeypatch.setenv("AAD_TENANT_ID", TENANT)
    monkeypatch.setenv("AAD_AUDIENCE", f"{API},{SPA}")
    monkeypatch.setenv("AAD_SPA_CLIENT_ID", SPA)
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def _directives(resp):
    return {d.split()[0]: d.split()[1:] for d in resp.headers["Content-Security-Policy"].split("; ")}


def _assert_locked_down(resp):
    csp = _directives(resp)
    assert csp["default-src"] == ["'self'"] and csp["script-src"] == ["'self'"]
    assert csp["object-src"] == ["'none'"] and csp["base-uri"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]
    assert csp["require-trusted-types-for"] == ["'script'"] and csp["trusted-types"] == ["'none'"]
    assert "unsafe" not in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert "Set-Cookie" not in resp.headers


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.script_text, self._in_script = [], "", False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_text += data


def _parse(html: bytes) -> _Tags:
    parser = _Tags()
    parser.feed(html.decode("utf-8"))
    return parser


def test_the_page_is_html_under_a_strict_policy():
    resp = handlers.web_page(get("/"))
    assert resp.status_code == 200 and resp.mimetype == "text/html" and resp.charset == "utf-8"
    _assert_locked_down(resp)
    assert _directives(resp)["connect-src"] == ["'self'"]


def test_the_page_has_no_inline_script_style_or_handler_and_loads_only_its_own_files():
    page = _parse(handlers.web_page(get("/")).get_body())
    assert page.script_text.strip() == ""
    scripts = [a.get("src") for t, a in page.tags if t == "script"]
    assert scripts == ["/ui/app.js"]  # no MSAL.js without Entra
    for tag, attrs in page.tags:
        assert not any(k.startswith("on") or k == "style" for k in attrs), (tag, attrs)
        assert tag != "style"
        for key in ("src", "href"):
            value = attrs.get(key, "")
            assert not value or value.startswith(("/ui/", "#")), (tag, value)


@pytest.mark.parametrize("name, mimetype", [("app.js", "text/javascript"), ("app.css", "text/css"),
                                            ("msal-browser.min.js", "text/javascript"),
                                            ("msal-browser.LICENSE.txt", "text/plain")])
def test_each_asset_has_its_type_and_the_same_headers(name, mimetype):
    resp = asset(name)
    assert resp.status_code == 200 and resp.mimetype == mimetype and resp.get_body()
    _assert_locked_down(resp)


@pytest.mark.parametrize("name", ["nothing.js", "index.html", "", "..", "..%2f..%2fshared%2fconfig.py",
                                  "../shared/config.py", "..\\..\\shared\\config.py", "vendor/msal-browser.min.js",
                                  "APP.JS", "app.js%00.png", "/etc/passwd"])
def test_anything_but_a_listed_asset_is_404_and_never_echoed(name):
    resp = asset(name)
    assert resp.status_code == 404
    assert resp.get_body() == b"not found"
    _assert_locked_down(resp)


def test_a_traversal_through_the_local_host_reaches_no_file():
    from devhost.host import FunctionHost
    from function_app import app

    host = FunctionHost(app)
    for path in ("/ui/..%2f..%2fshared/config.py", "/ui/..%2f..%2fshared%2fconfig.py", "/ui/../shared/config.py",
                 "/ui/%2e%2e/function_app.py", "/ui/vendor/msal-browser.min.js"):
        found = host.match("GET", path)
        if found is None:
            continue  # no route: the host answers 404
        route, params = found
        assert route.name == "web_asset", path
        assert route.fn(get(path, params)).status_code == 404, path


def test_without_entra_the_config_offers_local_accounts_only():
    resp = handlers.web_config(get("/ui/config.json"))
    assert resp.status_code == 200 and json.loads(resp.get_body()) == {"entra": None}
    assert resp.headers["Cache-Control"] == "no-store"
    _assert_locked_down(resp)


def test_entra_without_a_spa_client_id_still_offers_local_accounts_only(monkeypatch):
    monkeypatch.setenv("AAD_TENANT_ID", TENANT)
    monkeypatch.setenv("AAD_AUDIENCE", API)
    get_settings.cache_clear()
    try:
        assert web.entra_client() is None
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_with_entra_the_page_loads_msal_and_may_reach_the_sign_in_host_only(entra):
    assert json.loads(handlers.web_config(get("/ui/config.json")).get_body()) == {"entra": {
        "clientId": SPA, "authority": f"https://login.microsoftonline.com/{TENANT}",
        "scopes": [f"{API}/user_impersonation"]}}
    resp = handlers.web_page(get("/"))
    _assert_locked_down(resp)
    assert _directives(resp)["connect-src"] == ["'self'", "https://login.microsoftonline.com"]
    page = _parse(resp.get_body())
    # MSAL.js first: both are deferred, so they run in this order
    assert [a.get("src") for t, a in page.tags if t == "script"] == ["/ui/msal-browser.min.js", "/ui/app.js"]
    assert _directives(asset("app.js"))["connect-src"] == ["'self'"]


def test_a_broken_setting_still_serves_the_page_which_shows_the_apis_503(monkeypatch):
    monkeypatch.setenv("TOKEN_SIGNING_KEY", "short")
    get_settings.cache_clear()
    try:
        assert handlers.web_page(get("/")).status_code == 200
        assert json.loads(handlers.web_config(get("/ui/config.json")).get_body()) == {"entra": None}
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_app_js_builds_the_page_from_text_nodes_only():
    source = (ROOT / "web" / "app.js").read_text()
    assert not re.search(r"\.\s*(innerHTML|outerHTML|insertAdjacentHTML)\b|\[\s*[\"'](innerHTML|outerHTML)", source)
    for sink in ("document.write", "eval(", "new Function", "setTimeout(\"", "document.cookie", "localStorage"):
        assert sink not in source, sink
    assert "textContent" in source and "createTextNode" in source


def test_the_vendored_msal_is_the_pinned_npm_package():
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]["@azure/msal-browser"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned)  # exact: the committed copy must be that release
    vendored = web.read(web.ASSETS["msal-browser.min.js"][0])
    assert vendored.startswith(f"/*! @azure/msal-browser v{pinned} ".encode())
    installed = ROOT / "node_modules" / "@azure" / "msal-browser" / "lib" / "msal-browser.min.js"
    if installed.exists():  # `make` installs node_modules; a bare checkout may not have it
        assert installed.read_bytes() == vendored
    assert b"MIT License" in web.read(web.ASSETS["msal-browser.LICENSE.txt"][0])


def test_the_deployment_package_keeps_the_web_files():
    ignored = [line.strip().rstrip("/") for line in (ROOT / ".funcignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert not any(p in ("web", "web/vendor", "*.js", "*.css", "*.html") for p in ignored)
    for _, (relative, _) in web.ASSETS.items():
        assert (web.WEB_DIR / relative).is_file()
    assert (web.WEB_DIR / web.PAGE).is_file()


def test_the_handlers_keep_the_signature_the_worker_checks():
    import inspect

    from function_app import app

    app.functions_bindings = None
    found = {f.get_function_name(): f for f in app.get_functions()}
    for name in ("web_page", "web_asset", "web_config"):
        f = found[name]
        assert f.is_http_function() and f.get_trigger().name == "req"
        assert list(inspect.signature(f.get_user_function()).parameters) == ["req"]
