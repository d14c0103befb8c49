"""ML Server's asynchronous batch API of each service (shared.batch has how it runs)."""
import azure.functions as func

from shared import batch
from shared.api import operation
from shared.errors import BadRequest
from shared.http import bytes_response, json_body, json_response, route

bp = func.Blueprint()
TAG = "Batch"
_ROUTE = "api/{name}/{version}/batch"


@operation(bp, "POST", _ROUTE, "StartBatchExecution", tag=TAG, summary="Score many records, asynchronously",
           body="BatchWebServiceParameters", optional_query=("parallelCount",), status=202,
           returns="StartBatchExecutionResponse", errors=(404,), core=False)
def start_batch_execution(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(batch.start(user, route(req, "name"), route(req, "version"), json_body(req),
                                     req.params.get("parallelCount")), status=202)


@operation(bp, "GET", _ROUTE, "GetBatchExecutions", tag=TAG, summary="The caller's batches of this service (an Owner's: everyone's)",
           returns="[string]", errors=(400,), core=False)
def get_batch_executions(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(batch.list_ids(user, route(req, "name"), route(req, "version")))


@operation(bp, "GET", _ROUTE + "/{executionId}", "GetBatchExecutionStatus", tag=TAG,
           summary="A batch's state, and its results", optional_query=("showPartialResults", "showPartialResult"),
           returns="BatchWebServiceResult", errors=(400, 404), core=False)
def get_batch_execution_status(req: func.HttpRequest, user) -> func.HttpResponse:
    partial = _flag(req, "showPartialResults")
    if partial is None:
        partial = _flag(req, "showPartialResult")
    return json_response(batch.status(user, route(req, "name"), route(req, "version"), route(req, "executionId"),
                                      bool(partial)))


@operation(bp, "DELETE", _ROUTE + "/{executionId}", "CancelAndDeleteBatchExecution", tag=TAG,
           summary="Stop a batch and delete its records and results", returns="[string]", errors=(400, 404),
           core=False)
def cancel_and_delete_batch_execution(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(batch.cancel(user, route(req, "name"), route(req, "version"), route(req, "executionId")))


@operation(bp, "GET", _ROUTE + "/{executionId}/{index}/files", "GetBatchExecutionFiles", tag=TAG,
           summary="The output files of one record", returns="[string]", errors=(400, 404), core=False)
def get_batch_execution_files(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(batch.files(user, route(req, "name"), route(req, "version"), route(req, "executionId"),
                                     route(req, "index")))


@operation(bp, "GET", _ROUTE + "/{executionId}/{index}/files/{fileName}", "GetBatchExecutionFile", tag=TAG,
           summary="One output file of one record", returns="file", errors=(400, 404), core=False)
def get_batch_execution_file(req: func.HttpRequest, user) -> func.HttpResponse:
    name = route(req, "fileName")
    return bytes_response(batch.file(user, route(req, "name"), route(req, "version"), route(req, "executionId"),
                                     route(req, "index"), name), mimetype="application/octet-stream", filename=name)


def _flag(req: func.HttpRequest, name: str) -> bool | None:
    raw = req.params.get(name)
    if raw is None:
        return None
    if raw.lower() not in ("true", "false"):
        raise BadRequest(f"{name} must be true or false")
    return raw.lower() == "true"
