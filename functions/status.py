import azure.functions as func

from shared import status as core
from shared.http import endpoint, json_response

bp = func.Blueprint()


@bp.route(route="status", methods=["GET"])
@endpoint()
def status(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(core.status())
