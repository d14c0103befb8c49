import azure.functions as func

from shared import snapshots
from shared.api import operation
from shared.http import bytes_response, json_response, route

bp = func.Blueprint()
TAG = "Snapshot APIs"


@operation(bp, "GET", "snapshots", "ListSnapshots", tag=TAG, summary="The caller's snapshots", returns="[Snapshot]")
def list_snapshots(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(snapshots.list_for(user))


@operation(bp, "GET", "snapshots/{id}", "GetSnapshotContent", tag=TAG, summary="The snapshot as a zip",
           returns="file", produces="application/zip", errors=(404, 422))
def get_snapshot_content(req: func.HttpRequest, user) -> func.HttpResponse:
    sid = route(req, "id")
    return bytes_response(snapshots.content(user, sid), mimetype="application/zip", filename=f"{sid}.zip")


@operation(bp, "DELETE", "snapshots/{id}", "DeleteSnapshot", tag=TAG, summary="Delete a snapshot", returns="string",
           errors=(404,))
def delete_snapshot(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(snapshots.delete(user, route(req, "id")))
