import azure.functions as func

from shared import sessions, snapshots
from shared.idempotency import HEADER
from shared.api import operation
from shared.http import bytes_response, json_response, read_bytes, read_json, read_upload, route

bp = func.Blueprint()
TAG = "Session APIs"
# a call its worker runs: the session's workspace is loaded (400 when it cannot be, 422 when it does
# not match its seal), one call at a time (409), within the workspace limits (413)
WORKER = (400, 404, 409, 413, 422)


@operation(bp, "POST", "sessions", "createSession", tag=TAG, summary="Create a Python session",
           body="CreateSessionRequest", status=201, returns="CreateSessionResponse", errors=(404, 422))
def create_session(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.create(user, read_json(req)), 201)


@operation(bp, "GET", "sessions", "listSessions", tag=TAG, summary="The caller's sessions", returns="[Session]")
def list_sessions(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.list_for(user))


@operation(bp, "DELETE", "sessions/{id}", "closeSession", tag=TAG, summary="Close a session", returns="string",
           errors=(404, 409))
def close_session(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.close(user, route(req, "id")))


@operation(bp, "DELETE", "sessions/{id}/force", "closeSessionByForce", tag=TAG,
           summary="Close a session, killing what it runs", returns="string", errors=(404, 409))
def close_session_by_force(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.close(user, route(req, "id")))


@operation(bp, "POST", "sessions/{id}/cancel", "cancelSession", tag=TAG,
           summary="Cancel the running execution; the session stays", returns="string", errors=(404,))
def cancel_session(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.cancel(user, route(req, "id")))


@operation(bp, "POST", "sessions/{id}/execute", "executeCode", tag=TAG, summary="Run code in the session",
           body="ExecuteRequest", returns="ExecuteResponse", errors=WORKER)
def execute_code(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.execute(user, route(req, "id"), read_json(req)))


@operation(bp, "GET", "sessions/{id}/console-output", "getSessionConsoleOutput", tag=TAG,
           summary="Console output of the last execution", returns="ConsoleOutputResponse", errors=(404,))
def get_session_console_output(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.console_output(user, route(req, "id")))


@operation(bp, "GET", "sessions/{id}/history", "listSessionHistory", tag=TAG,
           summary="The code blocks executed, oldest first", returns="[string]", errors=(404,))
def list_session_history(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.history(user, route(req, "id")))


@operation(bp, "POST", "sessions/{id}/snapshot", "CreateSnapshot", tag="Snapshot APIs",
           summary="Snapshot the session's workspace and files", body="CreateSnapshotRequest", body_required=False,
           status=201, returns="CreateSnapshotResponse", headers=("Idempotency-Key",), errors=(404, 422))
def create_snapshot(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(snapshots.create(user, route(req, "id"), read_json(req, required=False),
                                          req.headers.get(HEADER)), 201)


@operation(bp, "POST", "sessions/{id}/loadsnapshot/{snapshotId}", "LoadSnapshot", tag="Snapshot APIs",
           summary="Merge a snapshot into the session (same names are overwritten)", returns="string",
           errors=WORKER)
def load_snapshot(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.load_snapshot(user, route(req, "id"), route(req, "snapshotId")))


@operation(bp, "GET", "sessions/{id}/workspace", "listWorkspaceObjects", tag=TAG,
           summary="Names of the objects in the workspace", returns="[string]", errors=WORKER)
def list_workspace_objects(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.list_objects(user, route(req, "id")))


@operation(bp, "GET", "sessions/{id}/workspace/{objectName}", "getWorkspaceObject", tag=TAG,
           summary="An object, serialized with dill", returns="file", errors=WORKER)
def get_workspace_object(req: func.HttpRequest, user) -> func.HttpResponse:
    name = route(req, "objectName")
    return bytes_response(sessions.get_object(user, route(req, "id"), name), mimetype="application/octet-stream",
                          filename=f"{name}.dill")


@operation(bp, "POST", "sessions/{id}/workspace/{objectName}", "setWorkspaceObject", tag=TAG,
           summary="Upload an object serialized with dill", body="octet", returns="string", errors=WORKER)
def set_workspace_object(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.set_object(user, route(req, "id"), route(req, "objectName"), read_bytes(req)))


@operation(bp, "DELETE", "sessions/{id}/workspace/{objectName}", "deleteWorkspaceObject", tag=TAG,
           summary="Remove an object from the workspace", returns="string", errors=WORKER)
def delete_workspace_object(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.delete_object(user, route(req, "id"), route(req, "objectName")))


@operation(bp, "GET", "sessions/{id}/files", "listSessionFiles", tag=TAG,
           summary="Files in the session's working directory", returns="[string]", errors=WORKER)
def list_session_files(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.list_files(user, route(req, "id")))


@operation(bp, "POST", "sessions/{id}/files", "uploadSessionFile", tag=TAG,
           summary="Upload a file (form field 'file'); a file of the same name is replaced", body="multipart",
           status=201, returns="string", errors=WORKER)
def upload_session_file(req: func.HttpRequest, user) -> func.HttpResponse:
    name, data = read_upload(req, "file")
    return json_response(sessions.put_file(user, route(req, "id"), name, data), 201)


@operation(bp, "GET", "sessions/{id}/files/{fileName}", "getSessionFile", tag=TAG, summary="Download a file",
           returns="file", errors=WORKER)
def get_session_file(req: func.HttpRequest, user) -> func.HttpResponse:
    name = route(req, "fileName")
    return bytes_response(sessions.get_file(user, route(req, "id"), name), mimetype="application/octet-stream",
                          filename=name)


@operation(bp, "DELETE", "sessions/{id}/files/{fileName}", "deleteSessionFile", tag=TAG, summary="Delete a file",
           returns="string", errors=WORKER)
def delete_session_file(req: func.HttpRequest, user) -> func.HttpResponse:
    return json_response(sessions.delete_file(user, route(req, "id"), route(req, "fileName")))
