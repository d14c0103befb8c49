"""Stored workspaces (a zip of the pickled objects and the working-directory files): written
as new immutable blobs, sealed, and read back only after the seal verifies.

A session's workspace is kept in parts (stateFormat "parts"): a sealed entry per object and
per file (the small ones of a save share a blob) and a manifest naming them, so a call that
changes one small object writes that object and the manifest, not the whole workspace.
Snapshots and services keep one zip."""
from __future__ import annotations

import io
import json
import struct
import threading
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from . import ids, seal
from .errors import (ApiError, BadRequest, Conflict, IntegrityFailed, NotFound, PayloadTooLarge, StorageUnavailable,
                     Unavailable)
from .storage import blobs

PARTS = "parts"
OBJECTS, FILES, MANIFEST = "objects/", "files/", "manifest.json"
MAX_ENTRIES = 10000


def empty_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w"):
        pass
    return buf.getvalue()


def store(prefix: str, binding: str, data: bytes, blob_id: str | None = None) -> dict[str, str | int]:
    """Write the bytes under a new name (or `blob_id`, the same for the same bytes); returns the
    fields the owning entity must carry."""
    name = f"{prefix}/{blob_id or uuid.uuid4().hex}.zip"
    blobs.put(name, data)
    return {"stateBlob": name, "contentSize": len(data), **seal.seal(binding, data)}


def load(binding: str, record: dict) -> bytes | None:
    """The verified bytes an entity points at (a workspace in parts, as one zip), or None when
    it has none. :raises IntegrityFailed: :raises NotFound:"""
    return _load(binding, record)[0]


#: workspaces above this many bytes are read (and assembled) at most two at a time per
#: instance: each costs its size in the API process's memory, once or twice
LARGE_BYTES = 32 * 2**20
_large_loads = threading.BoundedSemaphore(2)
_LARGE_WAIT = 10.0


@contextmanager
def _large_slot(size: int) -> Iterator[None]:
    """One of the two slots for a workspace over LARGE_BYTES. :raises Unavailable:"""
    if size <= LARGE_BYTES:
        yield
        return
    if not _large_loads.acquire(timeout=_LARGE_WAIT):
        raise Unavailable("other large workspaces are being read or saved on this instance; try again shortly",
                          retry_after=5)
    try:
        yield
    finally:
        _large_loads.release()


def _load(binding: str, record: dict) -> tuple[bytes | None, dict[str, str]]:
    if not record.get("stateBlob"):
        return None, {}
    with _large_slot(int(record.get("contentSize") or 0)):
        return _read(binding, record)


def _read(binding: str, record: dict) -> tuple[bytes | None, dict[str, str]]:
    name = record["stateBlob"]
    if record.get("stateFormat") != PARTS:
        data = blobs.get(name)
        seal.verify(binding, data, record)
        return data, {}
    entries = _manifest(binding, record)
    read: dict[str, bytes] = {}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for entry, part in entries.items():
            if part["blob"] not in read:
                read[part["blob"]] = blobs.get(part["blob"])
            offset = int(part.get("offset", 0))
            data = read[part["blob"]][offset:offset + int(part["size"])]
            seal.verify(f"{binding}|{entry}", data, {"stateSha256": part["sha256"], "stateMac": part["mac"]})
            zf.writestr(entry, data)
    return buf.getvalue(), {entry: part["fp"] for entry, part in entries.items()}


def load_current(binding: str, record: dict, read: Callable[[], dict]) -> tuple[dict, bytes | None, dict[str, str]]:
    """`record` (just read), its verified bytes and, for a workspace in parts, each entry's
    fingerprint. Another instance may replace the workspace (and delete the old blobs) between
    reading the record and reading the blobs: then `read` the record again and follow it.
    :raises NotFound: :raises IntegrityFailed:"""
    for _ in range(_ATTEMPTS):
        try:
            return (record, *_load(binding, record))
        except NotFound:
            fresh = read()
            if fresh.get("stateBlob") == record.get("stateBlob"):
                raise  # not a replacement: the blob itself is missing
            record = fresh
    raise Conflict("the workspace kept changing while it was read; try again")


_ATTEMPTS = 3


def discard(record: dict, binding: str | None = None) -> None:
    """Delete what an entity points at: for a workspace in parts (with its `binding`), the
    parts its manifest names too."""
    name = record.get("stateBlob")
    if not name:
        return
    if record.get("stateFormat") == PARTS and binding is not None:
        try:
            entries = _manifest(binding, record)
        except (NotFound, IntegrityFailed):
            entries = {}
        for blob in {part["blob"] for part in entries.values()}:
            blobs.delete(blob)
        _forget_manifest(binding)
    blobs.delete(name)


class WorkspaceRefused(Unavailable):
    """A worker's save that does not add up: the worker is not trusted again."""

    def __init__(self, why: str) -> None:
        super().__init__(f"the session's worker sent a workspace that could not be saved ({why}); try again")


def store_changes(prefix: str, binding: str, changes: bytes, current: dict,
                  limit: int) -> tuple[dict[str, Any], list[str], list[str]]:
    """Save what a session's worker sent after a call (worker.dump_state: a zip of stored
    entries, the changed ones and manifest.json naming all with their fingerprints). Returns
    the fields for the entity, the blobs written (to delete if the entity is not saved) and
    the blobs it no longer needs (to delete once it is). Nothing in `changes` is unpickled or
    decompressed here. Small changed entries share blobs (large ones have their own), so a
    call that changes ten thousand small objects writes a few blobs, not ten thousand.
    :raises WorkspaceRefused: :raises PayloadTooLarge: :raises Unavailable:"""
    with _large_slot(len(changes)):
        return _store_changes(prefix, binding, changes, current, limit)


def _store_changes(prefix: str, binding: str, changes: bytes, current: dict,
                   limit: int) -> tuple[dict[str, Any], list[str], list[str]]:
    sent, fingerprints = _read_changes(changes)
    held: dict[str, dict] = {}
    if current.get("stateFormat") == PARTS:
        held = _manifest(binding, current)
    entries: dict[str, dict] = {}
    for entry, fp in fingerprints.items():
        if entry in sent:
            continue
        if held.get(entry, {}).get("fp") != fp:
            raise WorkspaceRefused(f"'{entry[:80]}' is named unchanged but is not stored")
        entries[entry] = held[entry]
    moved = _repacked(binding, entries)
    sent = {**moved, **sent}
    for entry in moved:
        del entries[entry]
    total = sum(e["size"] for e in entries.values()) + sum(len(d) for d in sent.values())
    if total > limit:
        raise PayloadTooLarge(f"the workspace (objects and files) is {total / 2**20:.1f} MB, above the limit "
                              f"of {limit // 2**20} MB (MAX_WORKSPACE_MB); delete objects or files it does not need")
    written: list[str] = []
    try:
        for group in _groups(sent):
            blob = f"{prefix}/parts/{uuid.uuid4().hex}"
            packed = b"".join(sent[e] for e in group)
            blobs.put(blob, packed)
            written.append(blob)
            offset = 0
            for entry in group:
                data = sent[entry]
                sealed = seal.seal(f"{binding}|{entry}", data)
                entries[entry] = {"blob": blob, "offset": offset, "size": len(data), "blobSize": len(packed),
                                  "sha256": sealed["stateSha256"], "mac": sealed["stateMac"],
                                  "fp": fingerprints[entry]}
                offset += len(data)
        manifest = json.dumps({"v": 1, "entries": entries}, separators=(",", ":")).encode()
        name = f"{prefix}/{uuid.uuid4().hex}.json"
        blobs.put(name, manifest)
        written.append(name)
    except BaseException:
        discard_blobs(written)
        raise
    fields = {"stateBlob": name, "stateFormat": PARTS, "contentSize": total, **seal.seal(binding, manifest)}
    _remember((binding, name, fields["stateMac"]), entries, len(manifest))
    kept = {e["blob"] for e in entries.values()}
    superseded = sorted({e["blob"] for e in held.values()} - kept)
    if current.get("stateBlob"):
        superseded.append(current["stateBlob"])
    return fields, written, superseded


#: entries smaller than this share blobs of at most _PACK_MAX
_PACK_BELOW, _PACK_MAX = 4 * 2**20, 16 * 2**20


def _repacked(binding: str, kept: dict[str, dict]) -> dict[str, bytes]:
    """Kept entries to copy into this save's blob: those in a shared blob now more than half
    dead (entries changed or dropped since), so dead bytes do not outweigh live ones. At most
    LARGE_BYTES of such blobs are read per save (more wait for the next), so a small save
    never reads a large workspace."""
    live: dict[str, int] = {}
    for part in kept.values():
        live[part["blob"]] = live.get(part["blob"], 0) + int(part["size"])
    sizes = {b: int(part.get("blobSize", 0)) for part in kept.values()
             if (b := part["blob"]) and 2 * live[b] < int(part.get("blobSize", 0))}
    sparse, budget = set(), LARGE_BYTES
    for blob, size in sorted(sizes.items(), key=lambda item: item[1]):
        if size > budget:
            break
        sparse.add(blob)
        budget -= size
    moved: dict[str, bytes] = {}
    for blob in sparse:
        data = blobs.get(blob)
        for entry, part in kept.items():
            if part["blob"] == blob:
                offset = int(part.get("offset", 0))
                piece = data[offset:offset + int(part["size"])]
                seal.verify(f"{binding}|{entry}", piece, {"stateSha256": part["sha256"], "stateMac": part["mac"]})
                moved[entry] = piece
    return moved


def _groups(sent: dict[str, bytes]) -> list[list[str]]:
    """Entries under _PACK_BELOW in shared blobs of at most _PACK_MAX; the others alone."""
    groups: list[list[str]] = []
    pack: list[str] = []
    size = 0
    for entry, data in sent.items():
        if len(data) >= _PACK_BELOW:
            groups.append([entry])
            continue
        if pack and size + len(data) > _PACK_MAX:
            groups.append(pack)
            pack, size = [], 0
        pack.append(entry)
        size += len(data)
    if pack:
        groups.append(pack)
    return groups


#: a manifest names at most MAX_ENTRIES entries of ~100 bytes each
_MANIFEST_MAX = MAX_ENTRIES * 400


def _read_changes(changes: bytes) -> tuple[dict[str, bytes], dict[str, str]]:
    """What a worker sent, checked: stored (not compressed) entries that do not overlap, each
    named once, and a manifest of bounded size naming every entry sent."""
    _small_directory(changes)
    try:
        zf = zipfile.ZipFile(io.BytesIO(changes))
        infos = zf.infolist()
        names = [i.filename for i in infos]
        if len(infos) > MAX_ENTRIES + 1 or len(set(names)) != len(names) or MANIFEST not in names:
            raise WorkspaceRefused("entries")
        if any(i.compress_type != zipfile.ZIP_STORED or i.compress_size != i.file_size for i in infos):
            raise WorkspaceRefused("compressed entries")
        if any(i.flag_bits & ~0x808 for i in infos):  # only "sizes after the data" and "UTF-8 name"
            raise WorkspaceRefused("entries")
        # Entries whose data overlap would make a small reply many times its size in memory
        if sum(i.file_size + 30 + len(i.filename.encode()) for i in infos) > len(changes):
            raise WorkspaceRefused("overlapping entries")
        manifest = next(i for i in infos if i.filename == MANIFEST)
        if manifest.file_size > _MANIFEST_MAX:
            raise WorkspaceRefused("manifest")
        text = zf.read(manifest)
        # {"entries": {name: fingerprint}}: two objects and no arrays, so decoding costs its size
        if text.count(b"{") > 2 or b"[" in text:
            raise WorkspaceRefused("manifest")
        listed = json.loads(text).get("entries")
        if (not isinstance(listed, dict) or len(listed) > MAX_ENTRIES
                or not all(isinstance(v, str) and len(v) <= 128 for v in listed.values())):
            raise WorkspaceRefused("manifest")
        for entry in listed:
            _check_entry(entry)
        sent = {i.filename: zf.read(i) for i in infos if i.filename != MANIFEST}
    except (zipfile.BadZipFile, ValueError, KeyError, AttributeError, EOFError, RecursionError, TypeError,
            RuntimeError, NotImplementedError):
        raise WorkspaceRefused("not a workspace") from None
    if set(sent) - set(listed):
        raise WorkspaceRefused("entries the manifest does not name")
    return sent, listed


#: a central-directory record is 46 bytes and its name; names here are short
_DIRECTORY_MAX = (MAX_ENTRIES + 1) * (46 + 300)


def _small_directory(changes: bytes) -> None:
    """Checked before zipfile reads the directory (it builds an object per record, however
    many a reply holds): the end record's count and directory size are bounded, and no zip64."""
    at = changes.rfind(b"PK\x05\x06", max(0, len(changes) - 22 - 65535))
    if at < 0 or len(changes) - at < 22:
        raise WorkspaceRefused("not a workspace")
    _, _, _, _, entries, size, _, _ = struct.unpack("<4s4H2LH", changes[at:at + 22])
    if entries > MAX_ENTRIES + 1 or size > _DIRECTORY_MAX or b"PK\x06\x07" in changes[max(0, at - 20):at]:
        raise WorkspaceRefused("entries")


def _check_entry(entry: Any) -> None:
    try:
        if not isinstance(entry, str):
            raise BadRequest("name")
        if entry.startswith(OBJECTS):
            if len(ids.object_name(entry[len(OBJECTS):])) > 256:
                raise BadRequest("name")
        elif entry.startswith(FILES):
            name = entry[len(FILES):]
            # the names a worker keeps (any file in its folder): no path, bounded
            if (not name or name in (".", "..") or any(c in name for c in "/\\\x00")
                    or len(name.encode("utf-8", "surrogatepass")) > 255):
                raise BadRequest("name")
        else:
            raise BadRequest("name")
    except BadRequest:
        raise WorkspaceRefused("an entry name") from None


# (binding, manifest blob, its MAC) -> (entries, manifest bytes): blobs never change, so a
# manifest read and verified once (or written here) need not be read again
_manifests: OrderedDict[tuple[str, str, str], tuple[dict, int]] = OrderedDict()
_manifests_lock = threading.Lock()
_MANIFESTS_BYTES = 16 * 2**20  # of manifest JSON kept (parsed, several times that)


def _remember(key: tuple[str, str, str], entries: dict, size: int) -> None:
    with _manifests_lock:
        _manifests[key] = (entries, size)
        while len(_manifests) > 1 and sum(n for _, n in _manifests.values()) > _MANIFESTS_BYTES:
            _manifests.popitem(last=False)
        if size > _MANIFESTS_BYTES:
            _manifests.pop(key, None)


def _forget_manifest(binding: str) -> None:
    with _manifests_lock:
        for key in [k for k in _manifests if k[0] == binding]:
            del _manifests[key]


def _manifest(binding: str, record: dict) -> dict[str, dict]:
    """The verified manifest of a workspace in parts. :raises NotFound: :raises IntegrityFailed:"""
    key = (binding, record["stateBlob"], str(record.get("stateMac", "")))
    with _manifests_lock:
        hit = _manifests.get(key)
    if hit is not None:
        return hit[0]
    data = blobs.get(key[1])
    seal.verify(binding, data, record)
    entries = json.loads(data)["entries"]
    _remember(key, entries, len(data))
    return entries


def sweep(prefix: str, keep: dict) -> None:
    """Delete the blobs under `prefix` other than `keep`'s: what earlier attempts of one
    idempotent request wrote and did not commit. A failure here leaves them for a later retry."""
    try:
        for name in blobs.names(prefix):
            if name != keep.get("stateBlob"):
                blobs.delete(name)
    except ApiError:
        pass


def abandon(exc: BaseException, record: dict | None = None, written: list[str] | None = None) -> None:
    """After the entity that was to point at a new stored copy failed to save: delete the copy
    (`record`'s blob, or the blobs `written`), unless storage gave no answer. The entity may then
    be saved after all, and an entity pointing at deleted blobs is worse than blobs nothing
    points at."""
    if isinstance(exc, StorageUnavailable):
        return
    if record:
        discard(record)
    discard_blobs(written or [])


def discard_blobs(names: list[str]) -> None:
    """Delete blobs a failed save wrote; a failure here must not hide the one being reported."""
    for name in names:
        try:
            blobs.delete(name)
        except ApiError:
            pass
