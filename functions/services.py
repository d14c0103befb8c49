import azure.functions as func

from shared import services
from shared.http import endpoint, json_response, read_json, route

bp = func.Blueprint()


@bp.route(route="services", methods=["GET"])
@endpoint()
def get_all_web_services(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(services.list_all(user))


@bp.route(route="services/{name}", methods=["GET"])
@endpoint()
def get_all_web_service_versions_by_name(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(services.list_all(user, route(req, "name")))


@bp.route(route="services/{name}", methods=["POST"])
@endpoint()
def publish_web_service(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(services.publish(user, route(req, "name"), None, read_json(req)), 201)


@bp.route(route="services/{name}/{version}", methods=["POST"])
@endpoint()
def publish_web_service_version(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(services.publish(user, route(req, "name"), route(req, "version"), read_json(req)), 201)


@bp.route(route="services/{name}/{version}", methods=["PATCH"])
@endpoint()
def patch_web_service_version(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(services.patch(user, route(req, "name"), route(req, "version"), read_json(req)))


@bp.route(route="services/{name}/{version}", methods=["GET"])
@endpoint()
def get_web_service_version(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(services.describe(user, route(req, "name"), route(req, "version")))


@bp.route(route="services/{name}/{version}", methods=["DELETE"])
@endpoint()
def delete_web_service_version(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(services.delete(user, route(req, "name"), route(req, "version")))
