import azure.functions as func

from shared import status as core
from shared.api import operation
from shared.http import json_response

bp = func.Blueprint()


def _unidentified() -> func.HttpResponse:
    return json_response(core.storage_down(), 503, {"Retry-After": "5"})


@operation(bp, "GET", "status", "status", tag="Status", summary="Health of the server and what it depends on",
           returns="StatusResponse", outage=_unidentified)
def status(req: func.HttpRequest, user) -> func.HttpResponse:
    document = core.status()
    if document["statusCode"] == "fail":
        return json_response(document, 503, {"Retry-After": "5"})
    return json_response(document)
