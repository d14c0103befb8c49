import azure.functions as func

from shared import sessions, snapshots
from shared.http import endpoint, json_response, read_json, route

bp = func.Blueprint()


@bp.route(route="sessions", methods=["POST"])
@endpoint()
def create_session(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.create(user, read_json(req)), 201)


@bp.route(route="sessions", methods=["GET"])
@endpoint()
def list_sessions(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.list_for(user))


@bp.route(route="sessions/{id}", methods=["DELETE"])
@endpoint()
def close_session(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.close(user, route(req, "id")))


@bp.route(route="sessions/{id}/execute", methods=["POST"])
@endpoint()
def execute_code(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.execute(user, route(req, "id"), read_json(req)))


@bp.route(route="sessions/{id}/snapshot", methods=["POST"])
@endpoint()
def create_snapshot(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(snapshots.create(user, route(req, "id"), read_json(req, required=False)), 201)
