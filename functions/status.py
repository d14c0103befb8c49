import azure.functions as func

from shared import status as core
from shared.api import operation
from shared.http import json_response

bp = func.Blueprint()


@operation(bp, "GET", "status", "status", tag="Status", summary="Health of the server and what it depends on",
           returns="StatusResponse")
def status(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(core.status())
