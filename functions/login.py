import azure.functions as func

from shared import auth
from shared.api import operation
from shared.http import client_address, json_response, read_json

bp = func.Blueprint()
TAG = "User"


@operation(bp, "POST", "login", "login", tag=TAG, summary="Log in; returns a bearer access token and a refresh token",
           body="LoginRequest", returns="AccessTokenResponse", authenticated=False, errors=(401, 429))
def login(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(auth.login(read_json(req), client_address(req)))


@operation(bp, "POST", "login/refreshToken", "renewToken", tag=TAG,
           summary="Renew: a new token pair; the old pair stops working", body="RenewTokenRequest",
           returns="AccessTokenResponse", authenticated=False, errors=(401,))
def renew_token(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(auth.renew(read_json(req)))


# ML Server's revoke, as its swagger has it (the query parameter). A RenewTokenRequest body is taken
# instead when the query is absent: it keeps the token out of URLs, and so out of request logs.
@operation(bp, "DELETE", "login/refreshToken", "revokeRefreshToken", tag=TAG,
           summary="Revoke a refresh token (or send it as a RenewTokenRequest body, kept out of request logs)",
           query=("refreshToken",), returns="AccessTokenResponse", authenticated=False, errors=(400, 401))
def revoke_refresh_token(req: func.HttpRequest) -> func.HttpResponse:
    token = req.params.get("refreshToken") or read_json(req, required=False).get("refreshToken")
    return json_response(auth.revoke(token))
