import azure.functions as func

from shared import services
from shared.idempotency import HEADER
from shared.api import operation
from shared.http import json_response, read_json, route

bp = func.Blueprint()
TAG = "Services Management APIs"


@operation(bp, "GET", "services", "getAllWebServices", tag=TAG, summary="Every service the caller may see",
           returns="[WebService]")
def get_all_web_services(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(services.list_all(user))


@operation(bp, "GET", "services/{name}", "getAllWebServiceVersionsByName", tag=TAG,
           summary="Every version of a service, oldest first", returns="[WebService]", errors=(400,))
def get_all_web_service_versions_by_name(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(services.list_all(user, route(req, "name")))


@operation(bp, "POST", "services/{name}", "publishWebService", tag=TAG,
           summary="Publish a development version (a GUID version only its author sees)",
           body="PublishDevelopmentVersionRequest", status=201, returns="string", headers=("Idempotency-Key",),
           errors=(404, 409, 422))
def publish_web_service(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(services.publish(user, route(req, "name"), None, read_json(req),
                                          req.headers.get(HEADER)), 201)


@operation(bp, "POST", "services/{name}/{version}", "publishWebServiceVersion", tag=TAG,
           summary="Publish a service version (409 if it exists: use PATCH)", body="PublishWebServiceRequest",
           status=201, returns="string", headers=("Idempotency-Key",), errors=(404, 409, 422))
def publish_web_service_version(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(services.publish(user, route(req, "name"), route(req, "version"), read_json(req),
                                          req.headers.get(HEADER)), 201)


@operation(bp, "PATCH", "services/{name}/{version}", "patchWebServiceVersion", tag=TAG,
           summary="Change a version: absent or null fields are kept, empty ones cleared",
           body="PatchWebServiceRequest", returns="string", headers=("If-Match",), etag=True,
           errors=(404, 409, 422))
def patch_web_service_version(req: func.HttpRequest, user) -> func.HttpResponse:
    version, etag = services.patch(user, route(req, "name"), route(req, "version"), read_json(req),
                                   req.headers.get("if-match"))
    return json_response(version, headers={"ETag": etag})


@operation(bp, "GET", "services/{name}/{version}", "getWebServiceVersion", tag=TAG, summary="One version",
           returns="[WebService]", etag=True, errors=(404,))
def get_web_service_version(req: func.HttpRequest, user) -> func.HttpResponse:
    described, etag = services.describe(user, route(req, "name"), route(req, "version"))
    return json_response(described, headers={"ETag": etag})


@operation(bp, "DELETE", "services/{name}/{version}", "deleteWebServiceVersion", tag=TAG,
           summary="Delete a version", returns="string", headers=("If-Match",), errors=(404, 409))
def delete_web_service_version(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(services.delete(user, route(req, "name"), route(req, "version"), req.headers.get("if-match")))
