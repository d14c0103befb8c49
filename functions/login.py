import azure.functions as func

from shared import auth
from shared.http import endpoint, json_response, read_json

bp = func.Blueprint()


@bp.route(route="login", methods=["POST"])
@endpoint(authenticated=False)
def login(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(auth.login(read_json(req)))
