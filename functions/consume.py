import asyncio

import azure.functions as func

from shared import consume, swagger
from shared.api import operation
from shared.http import json_response, read_json, read_large_json, route

bp = func.Blueprint()


@operation(bp, "POST", "api/{name}/{version}", "consumeWebService", tag="Consume",
           summary="Consume a service (each service's own swagger describes it)", body="InputParameters",
           errors=(404, 422), core=False)
async def consume_web_service(req: func.HttpRequest, user) -> func.HttpResponse:
    # async: a warm service is answered on the event loop, without a hop to a thread; a large
    # body is parsed and checked in a thread, so it cannot hold the loop
    if len(req.get_body() or b"") > _ON_LOOP_BYTES:
        return await asyncio.to_thread(_consume_large, req, user)
    return json_response(await consume.consume_async(user, route(req, "name"), route(req, "version"),
                                                     read_json(req, required=False)))


_ON_LOOP_BYTES = 64 * 1024


def _consume_large(req: func.HttpRequest, user) -> func.HttpResponse:
    body = read_large_json(req, required=False)
    return json_response(consume.consume(user, route(req, "name"), route(req, "version"), body))


@operation(bp, "GET", "api/{name}/{version}/swagger.json", "GetWebServiceSwagger", tag="Services Management APIs",
           summary="The service's Swagger 2.0 document", returns="SwaggerJsonResponse", errors=(404,))
def get_web_service_swagger(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(swagger.service_document(user, route(req, "name"), route(req, "version")))


@operation(bp, "GET", "swagger.json", "getSwagger", tag="Swagger", summary="This API as a Swagger 2.0 document",
           returns="SwaggerJsonResponse")
def get_swagger(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(swagger.core_document())
