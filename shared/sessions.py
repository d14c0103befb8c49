"""Sessions: a Python workspace per user, executed in a worker, persisted after every execute
so any instance can serve the next call."""
from __future__ import annotations

import base64
import threading
from typing import Any

from . import ids, snapshots, workspaces
from .auth import Principal
from .config import get_settings
from .errors import BadRequest, Conflict, PreconditionFailed
from .sandbox import pool
from .sandbox.pool import WorkerDied, WorkerTimeout
from .storage.entities import Entities

_rows = Entities("sessions", what="session")
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _binding(owner: str, sid: str) -> str:
    return f"session:{owner}:{sid}"


def create(user: Principal, body: dict) -> dict:
    runtime = ids.runtime(body)
    name = ids.optional_str(body, "name") or ""
    sid = ids.new_id()
    values: dict[str, Any] = {"name": name, "runtimeType": runtime, "creationTime": ids.now()}
    snapshot_id = ids.optional_str(body, "snapshotId")
    if snapshot_id:
        data = snapshots.content(user, snapshot_id)
        values.update(workspaces.store(f"sessions/{sid}", _binding(user.name, sid), data))
    _rows.create(user.name, sid, values)
    return {"sessionId": sid}


def get(user: Principal, sid: str) -> dict:
    """:raises NotFound: also for another user's session."""
    return _rows.get(user.name, ids.existing_id(sid, "session"))


def view(row: dict) -> dict:
    return {"id": row["RowKey"], "name": row.get("name", ""), "owner": row["PartitionKey"],
            "runtimeType": row.get("runtimeType", "Python")}


def list_for(user: Principal) -> list[dict]:
    return [view(r) for r in _rows.list(user.name)]


def close(user: Principal, sid: str) -> str:
    row = get(user, sid)
    pool.sessions.retire(row["RowKey"])
    _rows.delete(row)
    workspaces.discard(row)
    return "Success"


def state(user: Principal, sid: str) -> bytes:
    """The session's current workspace zip (empty when nothing ran yet)."""
    row = get(user, sid)
    return workspaces.load(_binding(user.name, row["RowKey"]), row) or workspaces.empty_zip()


def execute(user: Principal, sid: str, body: dict) -> dict:
    code = body.get("code")
    if not isinstance(code, str):
        raise BadRequest("'code' is required and must be a string")
    inputs = body.get("inputParameters") or []
    if not isinstance(inputs, list) or not all(
            isinstance(p, dict) and isinstance(p.get("name"), str) and p["name"].isidentifier() for p in inputs):
        raise BadRequest("'inputParameters' must be a list of {name, value} objects with identifier names")
    outputs = body.get("outputParameters") or []
    if not isinstance(outputs, list) or not all(isinstance(n, str) for n in outputs):
        raise BadRequest("'outputParameters' must be a list of names")

    row = get(user, sid)
    sid = row["RowKey"]
    with _lock(sid):
        row = get(user, sid)  # re-read under the lock: another call may have just saved
        binding = _binding(user.name, sid)

        def start(worker: pool.Worker) -> None:
            data = workspaces.load(binding, row)
            reply = worker.call({"op": "load_session", "state": _b64(data)},
                                timeout=get_settings().execution_timeout_seconds)
            if not reply.get("ok"):
                raise BadRequest(f"the session workspace could not be loaded: {reply.get('error')}")

        worker = pool.sessions.checkout(sid, row.get("stateSha256"), start)
        timeout = get_settings().execution_timeout_seconds
        try:
            reply = worker.call({"op": "execute", "code": code, "inputs": inputs, "outputs": outputs},
                                timeout=timeout)
        except WorkerTimeout:
            pool.sessions.retire(sid)
            return _failed(f"the code did not finish within {timeout:g} seconds and was stopped; "
                           "the workspace is as it was after the last completed execute")
        except WorkerDied as exc:
            pool.sessions.retire(sid)
            return _failed(f"{exc}; the workspace is as it was after the last completed execute")
        if not reply.get("ok"):
            pool.sessions.retire(sid)
            return _failed(reply.get("error", "the worker failed"))
        data = base64.b64decode(reply.pop("state"))
        stored = workspaces.store(f"sessions/{sid}", binding, data)
        old = dict(row)
        row.update(stored)
        try:
            _rows.replace(row)
        except PreconditionFailed:
            pool.sessions.retire(sid)
            workspaces.discard(stored)
            raise Conflict("another call changed this session at the same time; run the code again",
                           ) from None
        worker.tag = stored["stateSha256"]
        workspaces.discard(old)
    reply.pop("ok", None)
    return reply


def _failed(message: str) -> dict:
    return {"success": False, "errorMessage": message, "consoleOutput": "", "outputParameters": [],
            "changedFiles": []}


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode() if data else None


def _lock(sid: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(sid, threading.Lock())
