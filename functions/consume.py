import azure.functions as func

from shared import consume, swagger
from shared.http import endpoint, json_response, read_json, route

bp = func.Blueprint()


@bp.route(route="api/{name}/{version}", methods=["POST"])
@endpoint()
def consume_web_service(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(consume.consume(user, route(req, "name"), route(req, "version"),
                                         read_json(req, required=False)))


@bp.route(route="api/{name}/{version}/swagger.json", methods=["GET"])
@endpoint()
def get_web_service_swagger(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(swagger.service_document(user, route(req, "name"), route(req, "version")))
