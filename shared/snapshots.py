"""Snapshots: a sealed copy of a session's workspace, private to its creator."""
from __future__ import annotations

from . import ids, sessions, workspaces
from .auth import Principal
from .errors import ApiError, BadRequest
from .storage.entities import Entities

_rows = Entities("snapshots", what="snapshot")


def _binding(owner: str, snapshot_id: str) -> str:
    return f"snapshot:{owner}:{snapshot_id}"


def create(user: Principal, sid: str, body: dict) -> dict:
    name = ids.optional_str(body, "name", max_length=ids.TITLE_MAX) or ""
    data = sessions.state(user, sid)
    snapshot_id = ids.new_id()
    stored = workspaces.store(f"snapshots/{snapshot_id}", _binding(user.name, snapshot_id), data)
    try:
        _rows.create(user.name, snapshot_id, {"name": name, "creationTime": ids.now(), **stored})
    except ApiError:
        workspaces.discard(stored)
        raise
    return {"snapshotId": snapshot_id}


def get(user: Principal, snapshot_id: str) -> dict:
    """:raises NotFound: also for another user's snapshot."""
    return _rows.get(user.name, ids.existing_id(snapshot_id, "snapshot"))


def list_for(user: Principal) -> list[dict]:
    return [{"id": r["RowKey"], "name": r.get("name", ""), "owner": r["PartitionKey"],
             "creationTime": r.get("creationTime", ""), "contentSize": r.get("contentSize", 0)}
            for r in _rows.list(user.name)]


def content(user: Principal, snapshot_id: str) -> bytes:
    """The verified zip. :raises NotFound: :raises IntegrityFailed:"""
    if not isinstance(snapshot_id, str):
        raise BadRequest("'snapshotId' must be a string")
    row = get(user, snapshot_id)
    return workspaces.load(_binding(user.name, row["RowKey"]), row) or workspaces.empty_zip()


def delete(user: Principal, snapshot_id: str) -> str:
    row = get(user, snapshot_id)
    _rows.delete(row)
    workspaces.discard(row)
    return "Success"
