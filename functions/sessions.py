import azure.functions as func

from shared import sessions, snapshots
from shared.http import bytes_response, endpoint, json_response, read_bytes, read_json, read_upload, route

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


@bp.route(route="sessions/{id}/force", methods=["DELETE"])
@endpoint()
def close_session_by_force(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.close(user, route(req, "id")))


@bp.route(route="sessions/{id}/cancel", methods=["POST"])
@endpoint()
def cancel_session(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.cancel(user, route(req, "id")))


@bp.route(route="sessions/{id}/console-output", methods=["GET"])
@endpoint()
def get_session_console_output(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.console_output(user, route(req, "id")))


@bp.route(route="sessions/{id}/history", methods=["GET"])
@endpoint()
def list_session_history(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.history(user, route(req, "id")))


@bp.route(route="sessions/{id}/loadsnapshot/{snapshotId}", methods=["POST"])
@endpoint()
def load_snapshot(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.load_snapshot(user, route(req, "id"), route(req, "snapshotId")))


@bp.route(route="sessions/{id}/workspace", methods=["GET"])
@endpoint()
def list_workspace_objects(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.list_objects(user, route(req, "id")))


@bp.route(route="sessions/{id}/workspace/{objectName}", methods=["GET"])
@endpoint()
def get_workspace_object(req: func.HttpRequest, user) -> func.HttpResponse:
    name = route(req, "objectName")
    return bytes_response(sessions.get_object(user, route(req, "id"), name), mimetype="application/octet-stream",
                          filename=f"{name}.dill")


@bp.route(route="sessions/{id}/workspace/{objectName}", methods=["POST"])
@endpoint()
def set_workspace_object(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.set_object(user, route(req, "id"), route(req, "objectName"), read_bytes(req)))


@bp.route(route="sessions/{id}/workspace/{objectName}", methods=["DELETE"])
@endpoint()
def delete_workspace_object(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.delete_object(user, route(req, "id"), route(req, "objectName")))


@bp.route(route="sessions/{id}/files", methods=["GET"])
@endpoint()
def list_session_files(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.list_files(user, route(req, "id")))


@bp.route(route="sessions/{id}/files", methods=["POST"])
@endpoint()
def upload_session_file(req: func.HttpRequest, user) -> func.HttpResponse:
    name, data = read_upload(req, "file")
    return json_response(sessions.put_file(user, route(req, "id"), name, data), 201)


@bp.route(route="sessions/{id}/files/{fileName}", methods=["GET"])
@endpoint()
def get_session_file(req: func.HttpRequest, user) -> func.HttpResponse:
    name = route(req, "fileName")
    return bytes_response(sessions.get_file(user, route(req, "id"), name), mimetype="application/octet-stream",
                          filename=name)


@bp.route(route="sessions/{id}/files/{fileName}", methods=["DELETE"])
@endpoint()
def delete_session_file(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.delete_file(user, route(req, "id"), route(req, "fileName")))
