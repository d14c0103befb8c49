import azure.functions as func

from shared import snapshots
from shared.http import bytes_response, endpoint, json_response, route

bp = func.Blueprint()


@bp.route(route="snapshots", methods=["GET"])
@endpoint()
def list_snapshots(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(snapshots.list_for(user))


@bp.route(route="snapshots/{id}", methods=["GET"])
@endpoint()
def get_snapshot_content(req: func.HttpRequest, user) -> func.HttpResponse:
    sid = route(req, "id")
    return bytes_response(snapshots.content(user, sid), mimetype="application/zip", filename=f"{sid}.zip")


@bp.route(route="snapshots/{id}", methods=["DELETE"])
@endpoint()
def delete_snapshot(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(snapshots.delete(user, route(req, "id")))
