"""Realtime services: an ONNX model (or a scikit-learn model converted to ONNX at publish),
sent as multipart/form-data with the file 'model' and the fields 'description' and 'operationId'."""
import azure.functions as func

from shared import services
from shared.idempotency import HEADER
from shared.api import operation
from shared.http import json_response, read_form, route

bp = func.Blueprint()
TAG = "Services Management APIs"


@operation(bp, "POST", "realtime-services/{name}", "publishRealtimeWebServiceByName", tag=TAG,
           summary="Publish a realtime development version (a GUID version only its author sees)",
           body="realtime", status=201, returns="string", headers=("Idempotency-Key",), errors=(409, 422))
def publish_realtime_web_service_by_name(req: func.HttpRequest, user) -> func.HttpResponse:
    form, model = read_form(req, "model", file_required=True)
    return json_response(services.publish_realtime(user, route(req, "name"), None, form, model,
                                                   req.headers.get(HEADER)), 201)


@operation(bp, "POST", "realtime-services/{name}/{version}", "publishRealtimeWebServiceByNameVersion", tag=TAG,
           summary="Publish a realtime service version (409 if it exists: use PATCH)",
           body="realtime", status=201, returns="string", headers=("Idempotency-Key",), errors=(409, 422))
def publish_realtime_web_service_by_name_version(req: func.HttpRequest, user) -> func.HttpResponse:
    form, model = read_form(req, "model", file_required=True)
    return json_response(services.publish_realtime(user, route(req, "name"), route(req, "version"), form,
                                                   model, req.headers.get(HEADER)), 201)


@operation(bp, "PATCH", "realtime-services/{name}/{version}", "patchRealtimeWebServiceByNameVersion", tag=TAG,
           summary="Change a realtime version: a new 'model', 'description' or 'operationId'",
           body="realtime", returns="string", headers=("If-Match",), etag=True, errors=(404, 409))
def patch_realtime_web_service_by_name_version(req: func.HttpRequest, user) -> func.HttpResponse:
    form, model = read_form(req, "model", file_required=False)
    version, etag = services.patch_realtime(user, route(req, "name"), route(req, "version"), form, model,
                                            req.headers.get("if-match"))
    return json_response(version, headers={"ETag": etag})
