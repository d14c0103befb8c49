"""ML Server operations that have no meaning on Azure Functions answered with a clear 501."""
import re

import azure.functions as func

from shared.api import operation
from shared.errors import NotImplementedOnFunctions

bp = func.Blueprint()

_NODES = ("Azure Functions scales instances itself; there are no compute nodes to configure. "
          "Use the Function App's scale settings (maximumInstanceCount) instead")
_POOLS = ("Azure Functions has no per-service shell pools; each instance keeps warm workers for the services "
          "it serves (MAX_WARM_SERVICES)")
_CONFIG, _SERVICES = "Centralized Configuration APIs", "Services Management APIs"

UNSUPPORTED = [
    ("GET", "computenodes", "getComputeNodes", _CONFIG, _NODES),
    ("POST", "computenodes", "setComputeNodes", _CONFIG, _NODES),
    ("PUT", "computenodes", "addComputeNode", _CONFIG, _NODES),
    ("DELETE", "computenodes", "removeComputeNode", _CONFIG, _NODES),
    ("POST", "services/{name}/{version}/pool", "createOrUpdateServicePool", _SERVICES, _POOLS),
    ("GET", "services/{name}/{version}/pool", "getServicePoolStatus", _SERVICES, _POOLS),
    ("DELETE", "services/{name}/{version}/pool", "deleteServicePool", _SERVICES, _POOLS),
]


def _register(method: str, route: str, operation_id: str, tag: str, why: str) -> None:
    def handler(req: func.HttpRequest, user) -> func.HttpResponse:
        raise NotImplementedOnFunctions(why)

    handler.__name__ = re.sub(r"(?<!^)(?=[A-Z])", "_", operation_id).lower()
    operation(bp, method, route, operation_id, tag=tag, summary=f"501: {why.split(';')[0]}",
              errors=(501,))(handler)


for _row in UNSUPPORTED:
    _register(*_row)
