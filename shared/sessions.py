"""Sessions: a Python workspace per user, run by a worker process and persisted after every
change, so any instance can serve the next call."""
from __future__ import annotations

import json
import logging
import threading
from typing import Any

from . import ids, snapshots, workspaces
from .auth import Principal
from .config import get_settings
from .errors import ApiError, BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, PreconditionFailed, Unavailable
from .sandbox import pool
from .sandbox.pool import WorkerBusy, WorkerDied, WorkerTimeout
from .storage.entities import Entities

log = logging.getLogger("o16n.sessions")
_rows = Entities("sessions", what="session")
_history = Entities("sessionhistory", what="session history")
_locks: dict[str, threading.Lock] = {}
_guard = threading.Lock()
_cancelled: set[str] = set()
# Table properties hold at most 64 KiB; longer console output and history entries are cut.
_MAX_PROPERTY_CHARS = 30000


def _binding(owner: str, sid: str) -> str:
    return f"session:{owner}:{sid}"


def _may_use(user: Principal) -> None:
    if user.role not in get_settings().session_role_list:
        raise Forbidden(f"the {user.role} role may not use sessions here (SESSION_ROLES)")


def create(user: Principal, body: dict) -> dict:
    _may_use(user)
    runtime = ids.runtime(body)
    name = ids.optional_str(body, "name", max_length=ids.TITLE_MAX) or ""
    sid = ids.new_id()
    values: dict[str, Any] = {"name": name, "runtimeType": runtime, "creationTime": ids.now(),
                              "consoleOutput": "", "executions": 0}
    snapshot_id = ids.optional_str(body, "snapshotId", max_length=64)
    stored: dict[str, Any] = {}
    if snapshot_id:
        data = snapshots.content(user, snapshot_id)
        stored = workspaces.store(f"sessions/{sid}", _binding(user.name, sid), data)
        values.update(stored)
    try:
        _rows.create(user.name, sid, values)
    except ApiError as exc:
        workspaces.abandon(exc, stored)
        raise
    return {"sessionId": sid}


def get(user: Principal, sid: str) -> dict:
    """:raises NotFound: also for another user's session. :raises Forbidden: a role without sessions."""
    _may_use(user)
    try:
        return _rows.get(user.name, ids.existing_id(sid, "session"))
    except NotFound:
        raise NotFound(f"session '{sid[:64]}' not found") from None


def view(row: dict) -> dict:
    return {"id": row["RowKey"], "name": row.get("name", ""), "owner": row["PartitionKey"],
            "runtimeType": row.get("runtimeType", "Python")}


def list_for(user: Principal) -> list[dict]:
    _may_use(user)
    return [view(r) for r in _rows.list(user.name)]


def close(user: Principal, sid: str) -> str:
    row = get(user, sid)
    pool.sessions.retire(row["RowKey"])
    _forget_lock(row["RowKey"])
    try:
        _rows.delete(row)
    except PreconditionFailed:  # a call saved the session since it was read: its blobs are not these
        raise Conflict("another call changed this session at the same time; try again") from None
    workspaces.discard(row, _binding(user.name, row["RowKey"]))
    for entry in _history.list(row["RowKey"]):
        _history.delete(entry)
    return "Success"


def cancel(user: Principal, sid: str) -> str:
    """Stop the running execution (on this instance); the session keeps its last saved state."""
    row = get(user, sid)
    with _guard:
        _cancelled.add(row["RowKey"])
    pool.sessions.retire(row["RowKey"])
    return "Success"


def console_output(user: Principal, sid: str) -> dict:
    return {"consoleOutput": get(user, sid).get("consoleOutput", "")}


def history(user: Principal, sid: str) -> list[str]:
    row = get(user, sid)
    return [e.get("code", "") for e in sorted(_history.list(row["RowKey"]), key=lambda e: e["RowKey"])]


def state(user: Principal, sid: str) -> bytes:
    """The session's current workspace zip (empty when nothing ran yet)."""
    row = get(user, sid)
    sid = row["RowKey"]
    _, data, _ = workspaces.load_current(_binding(user.name, sid), row, lambda: get(user, sid))
    return data or workspaces.empty_zip()


def execute(user: Principal, sid: str, body: dict) -> dict:
    code = body.get("code")
    if not isinstance(code, str):
        raise BadRequest("'code' is required and must be a string")
    inputs = body.get("inputParameters")
    inputs = [] if inputs is None else inputs
    if not isinstance(inputs, list) or not all(
            isinstance(p, dict) and isinstance(p.get("name"), str) and p["name"].isidentifier() for p in inputs):
        raise BadRequest("'inputParameters' must be a list of {name, value} objects with identifier names")
    for p in inputs:
        if "value" not in p:
            raise BadRequest(f"input parameter '{p['name'][:64]}' has no 'value' (send null for None)")
    outputs = body.get("outputParameters")
    outputs = [] if outputs is None else outputs
    if not isinstance(outputs, list) or not all(isinstance(n, str) for n in outputs):
        raise BadRequest("'outputParameters' must be a list of names")
    message = {"op": "execute", "code": code, "inputs": inputs, "outputs": outputs}
    try:
        reply = _call(user, sid, message, record=code)
    except PayloadTooLarge as exc:
        return {"success": False, "errorMessage": f"{exc.message}; the workspace is as it was after the last "
                "completed call", "consoleOutput": "", "outputParameters": [], "changedFiles": []}
    except (WorkerTimeout, WorkerDied) as exc:
        key = ids.existing_id(sid, "session")
        with _guard:
            cancelled = key in _cancelled
            _cancelled.discard(key)
        if cancelled:
            why = "the execution was cancelled"
        elif isinstance(exc, WorkerTimeout):
            why = f"the code did not finish within {get_settings().execution_timeout_seconds:g} seconds and was stopped"
        else:
            why = str(exc)
        return {"success": False, "errorMessage": f"{why}; the workspace is as it was after the last completed "
                "call", "consoleOutput": "", "outputParameters": [], "changedFiles": []}
    return {k: reply[k] for k in ("success", "errorMessage", "consoleOutput", "outputParameters", "changedFiles")}


def load_snapshot(user: Principal, sid: str, snapshot_id: str) -> str:
    """Merge a snapshot's objects and files into the session (same names are overwritten)."""
    get(user, sid)
    data = snapshots.content(user, snapshot_id)
    _checked(user, sid, {"op": "merge_state", "state": data})
    return "Success"


def list_objects(user: Principal, sid: str) -> list[str]:
    return _checked(user, sid, {"op": "list_objects"})["names"]


def get_object(user: Principal, sid: str, name: str) -> bytes:
    return _checked(user, sid, {"op": "get_object", "name": ids.object_name(name)})["data"]


def set_object(user: Principal, sid: str, name: str, data: bytes) -> str:
    if not data:
        raise BadRequest("send the serialized object (dill) as the request body")
    _checked(user, sid, {"op": "set_object", "name": ids.object_name(name), "data": data})
    return "Success"


def delete_object(user: Principal, sid: str, name: str) -> str:
    _checked(user, sid, {"op": "delete_object", "name": ids.object_name(name)})
    return "Success"


def list_files(user: Principal, sid: str) -> list[str]:
    return _checked(user, sid, {"op": "list_files"})["names"]


def get_file(user: Principal, sid: str, name: str) -> bytes:
    return _checked(user, sid, {"op": "get_file", "name": ids.file_name(name)})["data"]


def put_file(user: Principal, sid: str, name: str, data: bytes) -> str:
    _checked(user, sid, {"op": "put_file", "name": ids.file_name(name), "data": data})
    return "Success"


def delete_file(user: Principal, sid: str, name: str) -> str:
    _checked(user, sid, {"op": "delete_file", "name": ids.file_name(name)})
    return "Success"


def _checked(user: Principal, sid: str, message: dict) -> dict:
    """A non-execute call: worker refusals become 404/400, a lost worker 503."""
    try:
        reply = _call(user, sid, message)
    except WorkerDied as exc:
        if exc.limit:
            raise PayloadTooLarge(str(exc)) from None
        raise Unavailable("the session's worker did not answer; try again") from None
    except WorkerTimeout:
        raise Unavailable("the session's worker did not answer; try again") from None
    return reply


def _call(user: Principal, sid: str, message: dict, *, record: str | None = None) -> dict:
    """Send one message to the session's worker (started from storage when this instance
    has none up to date) and persist the workspace it returns."""
    sid = ids.existing_id(sid, "session")
    lock = _lock(sid)
    if not lock.acquire(blocking=False):  # a call never waits behind another: it holds a thread
        raise Conflict("another call is running in this session; try again when it has finished",
                       headers={"Retry-After": "1"})
    try:
        try:
            row = get(user, sid)  # read under the lock: another call may have just saved
        except NotFound:
            _forget_lock(sid)
            raise
        binding = _binding(user.name, sid)
        timeout = get_settings().execution_timeout_seconds

        def start(worker: pool.Worker) -> None:
            current, data, fingerprints = workspaces.load_current(binding, dict(row), lambda: get(user, sid))
            row.clear()
            row.update(current)  # what the worker holds, and the ETag the save must match
            reply = worker.call({"op": "load_session", "state": data or None, "fingerprints": fingerprints},
                                timeout=timeout)
            if not reply.get("ok"):
                raise BadRequest(f"the session workspace could not be loaded: {reply.get('error')}")

        try:
            worker = pool.sessions.checkout(sid, row.get("stateSha256"), start, json.dumps([user.name]))
            worker.tag = row.get("stateSha256")
            reply = worker.call(message, timeout=timeout)
        except WorkerBusy:
            raise Conflict("another call is using this session's worker; try again",
                           headers={"Retry-After": "1"}) from None
        except (WorkerTimeout, WorkerDied):
            pool.sessions.retire(sid)
            raise
        if not reply.get("ok"):
            if reply.get("notFound"):
                raise NotFound(reply.get("error", "not found"))
            if reply.get("badRequest"):
                raise BadRequest(reply.get("error", "refused"))
            pool.sessions.retire(sid)  # it holds what was not saved
            if reply.get("tooLarge"):
                raise PayloadTooLarge(reply.get("error", "the workspace is too large"))
            raise Unavailable(reply.get("error", "the session's worker failed"))
        if "state" in reply:
            try:
                _persist(row, binding, reply.pop("state"), reply, record, worker)
            except ApiError:
                # The worker is ahead of what storage holds: drop it, so the next call starts
                # from the last saved workspace instead of from changes the caller saw fail.
                pool.sessions.retire(sid)
                raise
    finally:
        lock.release()
    return reply


def _persist(row: dict, binding: str, data: bytes, reply: dict, record: str | None, worker: pool.Worker) -> None:
    sid = row["RowKey"]
    stored, written, superseded = workspaces.store_changes(f"sessions/{sid}", binding, data, row,
                                                           get_settings().max_workspace_mb * 2**20)
    row.update(stored)
    if record is not None:
        row["consoleOutput"] = ids.cut_utf16(reply.get("consoleOutput", ""), _MAX_PROPERTY_CHARS)
        row["executions"] = int(row.get("executions") or 0) + 1
    try:
        _rows.replace(row)
    except ApiError as exc:
        workspaces.abandon(exc, written=written)  # not kept: changed or closed meanwhile
        if isinstance(exc, NotFound):
            raise NotFound(f"session '{sid}' was closed meanwhile") from None
        if isinstance(exc, PreconditionFailed):
            raise Conflict("another call changed this session at the same time; try again") from None
        raise
    worker.tag = stored["stateSha256"]
    # Committed: what follows is bookkeeping, and its failure must not fail the call.
    try:
        for blob in superseded:
            workspaces.discard({"stateBlob": blob})  # a failure here is logged below
        if record is not None:
            _history.create(sid, f"{row['executions']:010d}", {"code": ids.cut_utf16(record, _MAX_PROPERTY_CHARS)})
    except ApiError as exc:
        log.warning("session %s saved, but its bookkeeping failed: %s", sid, exc.message)


def _lock(sid: str) -> threading.Lock:
    with _guard:
        return _locks.setdefault(sid, threading.Lock())


def _forget_lock(sid: str) -> None:
    with _guard:
        _locks.pop(sid, None)
