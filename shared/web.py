"""The web page at `GET /`: the files in web/ (shipped in the repo and the package), a fixed list
of them, each served with a strict Content-Security-Policy; and what the page needs to know to
offer Entra ID sign-in."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from . import entra
from .config import get_settings
from .errors import ConfigError, NotFound

WEB_DIR = Path(__file__).resolve().parent.parent / "web"

#: the only files served, by the name in /ui/{name}: nothing else under web/ (or anywhere) is reachable
ASSETS: dict[str, tuple[str, str]] = {
    "app.js": ("app.js", "text/javascript"),
    "app.css": ("app.css", "text/css"),
    "msal-browser.min.js": ("vendor/msal-browser.min.js", "text/javascript"),
    "msal-browser.LICENSE.txt": ("vendor/msal-browser.LICENSE.txt", "text/plain"),
}
PAGE = "index.html"
HTML = "text/html"

#: Entra's sign-in host: MSAL.js reads its metadata and redeems codes there (connect-src)
ENTRA_LOGIN_HOST = "https://login.microsoftonline.com"


@lru_cache(maxsize=None)
def read(relative: str) -> bytes:
    """One of the files above (read once: they change only with a deployment)."""
    return (WEB_DIR / relative).read_bytes()


def page(*, entra_login: bool) -> bytes:
    """index.html; MSAL.js is loaded (before app.js) only when the page offers Entra sign-in."""
    html = read(PAGE)
    return html.replace(_MSAL_MARK, _MSAL_TAG) if entra_login else html


_MSAL_MARK = b"<!-- msal -->"
_MSAL_TAG = b'<script src="/ui/msal-browser.min.js" defer></script>'


def asset(name: str) -> tuple[bytes, str]:
    """The file's bytes and media type (text/* are UTF-8). :raises NotFound: a name not in ASSETS"""
    entry = ASSETS.get(name)
    if entry is None:
        raise NotFound("no such file")  # never echoes the name: it is whatever the caller sent
    return read(entry[0]), entry[1]


def entra_client() -> dict[str, object] | None:
    """What MSAL.js needs (client id, authority, the scope this API checks), or None when the page
    offers local accounts only: Entra is not configured, its SPA client id is not set, or the
    settings cannot be read (the API answers 503 naming the setting, and the page shows that)."""
    try:
        s = get_settings()
        if not (entra.configured() and s.aad_spa_client_id):
            return None
    except ConfigError:
        return None
    audience = s.aad_audience.split(",")[0].strip().rstrip("/")
    return {"clientId": s.aad_spa_client_id, "authority": f"{ENTRA_LOGIN_HOST}/{s.aad_tenant_id}",
            "scopes": [f"{audience}/{s.aad_scope}"]}


def headers(*, entra_login: bool) -> dict[str, str]:
    """Security headers of the page and its files. Scripts and styles come from this origin only
    (no inline code, no eval), the page talks to this origin (and to Entra's sign-in host when
    Entra sign-in is offered), nothing may frame it, and DOM sinks that parse HTML are closed
    (Trusted Types with no policy: any `innerHTML = ...` throws)."""
    connect = "'self'" + (f" {ENTRA_LOGIN_HOST}" if entra_login else "")
    csp = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
           f"connect-src {connect}; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
           "form-action 'self'; require-trusted-types-for 'script'; trusted-types 'none'")
    return {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY", "Cross-Origin-Opener-Policy": "same-origin",
            "Cross-Origin-Resource-Policy": "same-origin", "Cache-Control": "no-cache"}
