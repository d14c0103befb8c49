"""A session's workspace in parts, against a real Azurite: what a worker sends is checked before
anything is kept (user code runs in that worker and can forge its replies)."""
import io
import json
import uuid
import zipfile

import pytest

from shared import workspaces
from shared.errors import IntegrityFailed, PayloadTooLarge
from shared.storage import blobs
from shared.storage._clients import container

pytestmark = pytest.mark.azurite
LIMIT = 10 * 2**20


def changes(entries: dict[str, str], sent: dict[str, bytes], *, compress: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zf:
        zf.writestr("manifest.json", json.dumps({"entries": entries}))
        for name, data in sent.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def where(azurite):
    sid = uuid.uuid4().hex
    return f"sessions/{sid}", f"session:alice:{sid}"


def stored(prefix: str) -> set[str]:
    return {b.name for b in container().list_blobs(name_starts_with=prefix + "/")}


def test_only_what_changed_is_written_and_what_is_dropped_goes(where):
    prefix, binding = where
    first, written, old = workspaces.store_changes(
        prefix, binding, changes({"objects/a": "1", "objects/b": "2"}, {"objects/a": b"AA", "objects/b": b"B"}), {},
        LIMIT)
    assert len(written) == 2 and old == []  # a and b share one blob; the manifest
    second, written2, old2 = workspaces.store_changes(
        prefix, binding, changes({"objects/a": "1", "objects/c": "3"}, {"objects/c": b"C"}), first, LIMIT)
    assert len(written2) == 2  # c and the manifest; a is kept where it is
    for blob in old2:
        blobs.delete(blob)
    _, data, fingerprints = workspaces.load_current(binding, second, lambda: second)
    zf = zipfile.ZipFile(io.BytesIO(data))
    assert {n: zf.read(n) for n in zf.namelist()} == {"objects/a": b"AA", "objects/c": b"C"}
    assert fingerprints == {"objects/a": "1", "objects/c": "3"}
    assert len(stored(prefix)) == 3  # a's blob, c's, the manifest: the first manifest is gone
    workspaces.discard(second, binding)
    assert stored(prefix) == set()


def test_a_shared_blob_mostly_dead_is_repacked(where):
    prefix, binding = where
    first, _, _ = workspaces.store_changes(
        prefix, binding, changes({"objects/a": "1", "objects/b": "2"}, {"objects/a": b"A", "objects/b": b"B" * 99}),
        {}, LIMIT)
    second, _, old = workspaces.store_changes(prefix, binding, changes({"objects/a": "1"}, {}), first, LIMIT)
    for blob in old:
        blobs.delete(blob)
    assert len(stored(prefix)) == 2  # a moved to a blob of its own; b's 99 bytes are gone
    _, data, _ = workspaces.load_current(binding, second, lambda: second)
    assert zipfile.ZipFile(io.BytesIO(data)).read("objects/a") == b"A"


def test_ten_thousand_changed_objects_are_one_blob(where):
    prefix, binding = where
    many = {f"objects/v{i}": str(i) for i in range(10_000)}
    _, written, _ = workspaces.store_changes(prefix, binding, changes(many, {k: b"x" for k in many}), {}, LIMIT)
    assert len(written) == 2


@pytest.mark.parametrize("entries, sent, compress, why", [
    ({"objects/a": "1"}, {}, False, "named unchanged but is not stored"),
    ({"objects/a": "1"}, {"objects/a": b"A", "objects/z": b"Z"}, False, "does not name"),
    ({"files/../../host.json": "1"}, {"files/../../host.json": b"x"}, False, "entry name"),
    ({"objects/not a name": "1"}, {"objects/not a name": b"x"}, False, "entry name"),
    ({"elsewhere/a": "1"}, {"elsewhere/a": b"x"}, False, "entry name"),
    ({"objects/a": "1"}, {"objects/a": b"\0" * 100_000}, True, "compressed"),
])
def test_a_forged_save_is_refused_and_leaves_nothing(where, entries, sent, compress, why):
    prefix, binding = where
    with pytest.raises(workspaces.WorkspaceRefused, match=why):
        workspaces.store_changes(prefix, binding, changes(entries, sent, compress=compress), {}, LIMIT)
    assert stored(prefix) == set()


def test_not_a_zip_is_refused(where):
    prefix, binding = where
    with pytest.raises(workspaces.WorkspaceRefused, match="not a workspace"):
        workspaces.store_changes(prefix, binding, b"PK\x03\x04 nonsense", {}, LIMIT)


def test_the_limit_counts_kept_parts_too(where):
    prefix, binding = where
    first, _, _ = workspaces.store_changes(prefix, binding, changes({"objects/a": "1"}, {"objects/a": b"A" * 600}),
                                           {}, 1000)
    with pytest.raises(PayloadTooLarge):
        workspaces.store_changes(prefix, binding, changes({"objects/a": "1", "objects/b": "2"},
                                                          {"objects/b": b"B" * 600}), first, 1000)
    assert len(stored(prefix)) == 2  # the first save only


def test_overlapping_entries_and_a_deep_manifest_are_refused(where):
    prefix, binding = where
    filler = b"F" * 100_000
    one = changes({"objects/a": "1"}, {"objects/a": filler})
    # a second central-directory record pointing at the same data: twice the bytes in memory
    zf = zipfile.ZipFile(io.BytesIO(one))
    info = next(i for i in zf.infolist() if i.filename == "objects/a")
    buf = io.BytesIO(one)
    out = zipfile.ZipFile(buf, "a")
    twin = zipfile.ZipInfo("objects/b")
    twin.compress_type, twin.file_size, twin.compress_size = zipfile.ZIP_STORED, info.file_size, info.compress_size
    twin.header_offset, twin.CRC = info.header_offset, info.CRC
    out.filelist.append(twin)
    out._didModify = True  # write the central directory again, with the twin
    out.close()
    with pytest.raises(workspaces.WorkspaceRefused):
        workspaces.store_changes(prefix, binding, buf.getvalue(), {}, LIMIT)
    deep = io.BytesIO()
    with zipfile.ZipFile(deep, "w") as z:
        z.writestr("manifest.json", '{"entries": {}, "x": ' + "[]," * 100_000 + "[]}")
    with pytest.raises(workspaces.WorkspaceRefused):
        workspaces.store_changes(prefix, binding, deep.getvalue(), {}, LIMIT)
    assert stored(prefix) == set()


def test_a_changed_part_is_never_loaded(where):
    prefix, binding = where
    record, _, _ = workspaces.store_changes(prefix, binding, changes({"objects/a": "1"}, {"objects/a": b"A"}), {},
                                            LIMIT)
    part = next(n for n in stored(prefix) if "/parts/" in n)
    blobs.delete(part)
    blobs.put(part, b"evil")
    workspaces._manifests.clear()
    with pytest.raises(IntegrityFailed):
        workspaces.load_current(binding, record, lambda: record)
    # nor under another session's binding
    with pytest.raises(IntegrityFailed):
        workspaces.load_current("session:bob:" + uuid.uuid4().hex, record, lambda: record)


def test_large_workspaces_are_read_two_at_a_time(where, monkeypatch):
    from shared.errors import Unavailable

    prefix, binding = where
    record, _, _ = workspaces.store_changes(prefix, binding, changes({"objects/a": "1"}, {"objects/a": b"A"}), {},
                                            LIMIT)
    large = {**record, "contentSize": workspaces.LARGE_BYTES + 1}
    monkeypatch.setattr(workspaces, "_LARGE_WAIT", 0.1)
    assert workspaces._large_loads.acquire() and workspaces._large_loads.acquire()
    try:
        with pytest.raises(Unavailable):
            workspaces.load(binding, large)
        assert workspaces.load(binding, record)  # small ones are not held up
    finally:
        workspaces._large_loads.release()
        workspaces._large_loads.release()
    assert workspaces.load(binding, large)


def test_a_save_of_directory_records_is_refused_before_they_are_read(where):
    prefix, binding = where
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.json", '{"entries": {}}')
        for i in range(workspaces.MAX_ENTRIES + 5):
            zf.writestr(f"objects/v{i}", b"")
    with pytest.raises(workspaces.WorkspaceRefused, match="entries"):
        workspaces.store_changes(prefix, binding, buf.getvalue(), {}, LIMIT)
    with pytest.raises(workspaces.WorkspaceRefused, match="not a workspace"):
        workspaces.store_changes(prefix, binding, b"no end record here", {}, LIMIT)


def test_entries_with_unusual_flags_are_refused(where):
    prefix, binding = where
    data = bytearray(changes({"objects/a": "1"}, {"objects/a": b"A"}))
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):  # mark the entries encrypted, in both headers
        at = -1
        while (at := data.find(sig, at + 1)) >= 0:
            flag_at = at + (6 if sig == b"PK\x03\x04" else 8)
            data[flag_at] |= 0x01
    with pytest.raises(workspaces.WorkspaceRefused):
        workspaces.store_changes(prefix, binding, bytes(data), {}, LIMIT)
