"""Snapshots: a sealed copy of a session's workspace, private to its creator."""
from __future__ import annotations

from . import idempotency, ids, sessions, workspaces
from .auth import Principal
from .errors import ApiError, BadRequest, Conflict, KeyReused, NotFound
from .storage.entities import Entities

_rows = Entities("snapshots", what="snapshot")


def _binding(owner: str, snapshot_id: str) -> str:
    return f"snapshot:{owner}:{snapshot_id}"


def create(user: Principal, sid: str, body: dict, key_header: str | None = None) -> dict:
    """With an Idempotency-Key, a retry answers with the snapshot its earlier attempt made."""
    name = ids.optional_str(body, "name", max_length=ids.TITLE_MAX) or ""
    key = idempotency.key(key_header, user.name, "snapshot", {"session": sid, "body": body})
    snapshot_id = key.id() if key else ids.new_id()
    if key and _made_by(user, key, snapshot_id):
        return {"snapshotId": snapshot_id}
    data = sessions.state(user, sid)
    stored = workspaces.store(f"snapshots/{snapshot_id}", _binding(user.name, snapshot_id), data,
                              key.blob_id(data) if key else None)
    try:
        try:
            _rows.create(user.name, snapshot_id, {"name": name, "creationTime": ids.now(), **stored,
                                                  **(key.fields() if key else {})})
        except Conflict:
            if not (key and _made_by(user, key, snapshot_id)):
                raise
            stored = get(user, snapshot_id)  # a concurrent attempt with the same key committed first
    except ApiError as exc:
        if key is None:
            workspaces.abandon(exc, stored)
        elif isinstance(exc, KeyReused):  # the key's snapshot is committed: nothing else of it is kept
            workspaces.sweep(key.blobs_under(f"snapshots/{snapshot_id}"), get(user, snapshot_id))
        # else: another attempt with this key may still commit the same blob; the one that does sweeps
        raise
    if key:
        workspaces.sweep(key.blobs_under(f"snapshots/{snapshot_id}"), stored)
    return {"snapshotId": snapshot_id}


def _made_by(user: Principal, key: idempotency.Key, snapshot_id: str) -> bool:
    """:raises KeyReused: the key made this snapshot for another request."""
    try:
        return key.made(_rows.get(user.name, snapshot_id))
    except NotFound:
        return False


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
