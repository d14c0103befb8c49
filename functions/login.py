import azure.functions as func

from shared import auth
from shared.http import endpoint, json_response, read_json

bp = func.Blueprint()


@bp.route(route="login", methods=["POST"])
@endpoint(authenticated=False)
def login(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(auth.login(read_json(req)))


@bp.route(route="login/refreshToken", methods=["POST"])
@endpoint(authenticated=False)
def renew_token(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(auth.renew(read_json(req)))


@bp.route(route="login/refreshToken", methods=["DELETE"])
@endpoint(authenticated=False)
def revoke_refresh_token(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(auth.revoke(req.params.get("refreshToken")))
