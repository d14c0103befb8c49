"""The storage layer against a real Azurite."""
import time
import uuid

import pytest

from shared import seal, workspaces
from shared.errors import Conflict, IntegrityFailed, NotFound, PreconditionFailed, Unavailable
from shared.storage import _clients, blobs
from shared.storage.entities import Entities

pytestmark = pytest.mark.azurite


@pytest.fixture
def rows(azurite):
    return Entities("itest", what="thing")


def test_create_is_create_only(rows):
    key = uuid.uuid4().hex
    rows.create("p", key, {"a": 1})
    with pytest.raises(Conflict, match="thing already exists"):
        rows.create("p", key, {"a": 2})
    assert rows.get("p", key)["a"] == 1


def test_get_of_a_missing_key_is_not_found(rows):
    with pytest.raises(NotFound, match="thing not found"):
        rows.get("p", uuid.uuid4().hex)


def test_replace_with_a_stale_etag_is_refused_and_changes_nothing(rows):
    key = uuid.uuid4().hex
    first = rows.create("p", key, {"a": 1})
    second = rows.replace({**first, "a": 2})
    with pytest.raises(PreconditionFailed):
        rows.replace({**first, "a": 3})
    assert rows.get("p", key)["a"] == 2
    with pytest.raises(PreconditionFailed):
        rows.delete(first)
    rows.delete(second)
    with pytest.raises(NotFound):
        rows.get("p", key)


def test_list_by_partition_returns_only_that_partition(rows):
    part = uuid.uuid4().hex
    rows.create(part, "1", {})
    rows.create(part, "2", {})
    rows.create(part + "x", "3", {})
    assert sorted(r["RowKey"] for r in rows.list(part)) == ["1", "2"]


def test_blobs_are_create_only_and_delete_is_idempotent(azurite):
    name = f"itest/{uuid.uuid4().hex}"
    blobs.put(name, b"one")
    with pytest.raises(Conflict):
        blobs.put(name, b"two")
    blobs.put(name, b"one")  # what an SDK retry whose first answer was lost does: done, not refused
    assert blobs.get(name) == b"one"
    blobs.delete(name)
    blobs.delete(name)
    with pytest.raises(NotFound):
        blobs.get(name)


def test_a_stored_workspace_loads_only_with_its_own_binding_and_unchanged_bytes(azurite):
    record = workspaces.store("itest", "session:alice:1", b"zip bytes")
    assert workspaces.load("session:alice:1", record) == b"zip bytes"
    with pytest.raises(IntegrityFailed):
        workspaces.load("session:bob:1", record)  # copied to someone else
    tampered_blob = f"itest/{uuid.uuid4().hex}"
    blobs.put(tampered_blob, b"zip bytes, changed")
    with pytest.raises(IntegrityFailed):
        workspaces.load("session:alice:1", {**record, "stateBlob": tampered_blob})
    forged = {**record, "stateBlob": tampered_blob,
              "stateSha256": seal.seal("x", b"zip bytes, changed")["stateSha256"]}
    with pytest.raises(IntegrityFailed):
        workspaces.load("session:alice:1", forged)  # a matching hash without the key's MAC


def test_storage_that_does_not_answer_is_503_within_the_timeout(azurite, monkeypatch):
    from devhost.__main__ import azurite_connection_string, free_port
    from tests.conftest import reset_caches

    monkeypatch.setenv("STORAGE_CONNECTION_STRING",
                       azurite_connection_string(free_port(), free_port(), queue_port=free_port()))
    monkeypatch.setenv("STORAGE_TIMEOUT_SECONDS", "1")
    reset_caches()
    try:
        start = time.monotonic()
        with pytest.raises(Unavailable) as info:
            Entities("itest", what="thing").get("p", "r")
        assert time.monotonic() - start < 10
        assert info.value.headers["Retry-After"]
        assert "127.0.0.1" not in info.value.message
    finally:
        monkeypatch.undo()
        reset_caches()
    _clients.ping()
