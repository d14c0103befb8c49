"""ML Server operations that have no meaning on Azure Functions, answered with a clear 501."""
import azure.functions as func

from shared.api import operation
from shared.errors import NotImplementedOnFunctions

bp = func.Blueprint()

_NODES = ("Azure Functions scales instances itself; there are no compute nodes to configure. "
          "Use the Function App's scale settings (maximumInstanceCount) instead")
_POOLS = ("Azure Functions has no per-service shell pools; each instance keeps warm workers for the services "
          "it serves (MAX_WARM_SERVICES)")
_REALTIME = "realtime services (revoscalepy models) are not served yet; publish a standard Python service instead"


def _refuse(why: str) -> func.HttpResponse:
    raise NotImplementedOnFunctions(why)


@operation(bp, "GET", "computenodes", "getComputeNodes", tag="Centralized Configuration APIs",
           summary="Not on Azure Functions (501)", errors=(401, 501))
def get_compute_nodes(req: func.HttpRequest, user) -> func.HttpResponse:
    return _refuse(_NODES)


@operation(bp, "POST", "computenodes", "setComputeNodes", tag="Centralized Configuration APIs",
           summary="Not on Azure Functions (501)", errors=(401, 501))
def set_compute_nodes(req: func.HttpRequest, user) -> func.HttpResponse:
    return _refuse(_NODES)


@operation(bp, "PUT", "computenodes", "addComputeNode", tag="Centralized Configuration APIs",
           summary="Not on Azure Functions (501)", errors=(401, 501))
def add_compute_node(req: func.HttpRequest, user) -> func.HttpResponse:
    return _refuse(_NODES)


@operation(bp, "DELETE", "computenodes", "removeComputeNode", tag="Centralized Configuration APIs",
           summary="Not on Azure Functions (501)", errors=(401, 501))
def remove_compute_node(req: func.HttpRequest, user) -> func.HttpResponse:
    return _refuse(_NODES)


@operation(bp, "POST", "services/{name}/{version}/pool", "createOrUpdateServicePool", tag="Services Management APIs",
           summary="Not on Azure Functions (501)", errors=(401, 501))
def create_or_update_service_pool(req: func.HttpRequest, user) -> func.HttpResponse:
    return _refuse(_POOLS)


@operation(bp, "GET", "services/{name}/{version}/pool", "getServicePoolStatus", tag="Services Management APIs",
           summary="Not on Azure Functions (501)", errors=(401, 501))
def get_service_pool_status(req: func.HttpRequest, user) -> func.HttpResponse:
    return _refuse(_POOLS)


@operation(bp, "DELETE", "services/{name}/{version}/pool", "deleteServicePool", tag="Services Management APIs",
           summary="Not on Azure Functions (501)", errors=(401, 501))
def delete_service_pool(req: func.HttpRequest, user) -> func.HttpResponse:
    return _refuse(_POOLS)


@operation(bp, "POST", "realtime-services/{name}", "publishRealtimeWebServiceByName", tag="Services Management APIs",
           summary="Not served yet (501)", errors=(401, 501))
def publish_realtime_web_service_by_name(req: func.HttpRequest, user) -> func.HttpResponse:
    return _refuse(_REALTIME)


@operation(bp, "POST", "realtime-services/{name}/{version}", "publishRealtimeWebServiceByNameVersion",
           tag="Services Management APIs", summary="Not served yet (501)", errors=(401, 501))
def publish_realtime_web_service_by_name_version(req: func.HttpRequest, user) -> func.HttpResponse:
    return _refuse(_REALTIME)


@operation(bp, "PATCH", "realtime-services/{name}/{version}", "patchRealtimeWebServiceByNameVersion",
           tag="Services Management APIs", summary="Not served yet (501)", errors=(401, 501))
def patch_realtime_web_service_by_name_version(req: func.HttpRequest, user) -> func.HttpResponse:
    return _refuse(_REALTIME)
