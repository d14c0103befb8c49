"""The web page for people at `GET /`, its files under /ui/ (shared.web has which, and the
headers they carry). Not part of ML Server's API, so not in the core swagger."""
import azure.functions as func

from shared import web
from shared.errors import NotFound
from shared.http import json_response, route

bp = func.Blueprint()

# The site root. Azure's router does not run a function whose route is "" (the host's landing page
# answers instead): an optional parameter that may be no longer than 0 matches "/" and nothing else.
PAGE_ROUTE = "{page:maxlength(0)?}"


@bp.route(route=PAGE_ROUTE, methods=["GET"])
def web_page(req: func.HttpRequest) -> func.HttpResponse:
    entra_login = web.entra_client() is not None
    return _file(web.page(entra_login=entra_login), web.HTML, entra_login=entra_login)


@bp.route(route="ui/config.json", methods=["GET"])
def web_config(req: func.HttpRequest) -> func.HttpResponse:
    return json_response({"entra": web.entra_client()},
                         headers={**web.headers(entra_login=False), "Cache-Control": "no-store"})


@bp.route(route="ui/{name}", methods=["GET"])
def web_asset(req: func.HttpRequest) -> func.HttpResponse:
    try:
        body, mimetype = web.asset(route(req, "name"))
    except NotFound:
        return func.HttpResponse("not found", status_code=404, mimetype="text/plain",
                                 headers=web.headers(entra_login=False))
    return _file(body, mimetype, entra_login=False)


def _file(body: bytes, mimetype: str, *, entra_login: bool) -> func.HttpResponse:
    return func.HttpResponse(body, status_code=200, mimetype=mimetype, charset="utf-8",
                             headers=web.headers(entra_login=entra_login))
