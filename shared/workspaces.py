"""Stored workspaces (a zip of the pickled objects and the working-directory files): written
as new immutable blobs, sealed, and read back only after the seal verifies."""
from __future__ import annotations

import io
import uuid
import zipfile

from collections.abc import Callable

from . import seal
from .errors import Conflict, NotFound
from .storage import blobs


def empty_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w"):
        pass
    return buf.getvalue()


def store(prefix: str, binding: str, data: bytes) -> dict[str, str | int]:
    """Write the bytes under a new name; returns the fields the owning entity must carry."""
    name = f"{prefix}/{uuid.uuid4().hex}.zip"
    blobs.put(name, data)
    return {"stateBlob": name, "contentSize": len(data), **seal.seal(binding, data)}


def load(binding: str, record: dict) -> bytes | None:
    """The verified bytes an entity points at, or None when it has none.
    :raises IntegrityFailed: :raises NotFound:"""
    name = record.get("stateBlob")
    if not name:
        return None
    data = blobs.get(name)
    seal.verify(binding, data, record)
    return data


def load_current(binding: str, record: dict, read: Callable[[], dict]) -> tuple[dict, bytes | None]:
    """`record` (just read) and its verified bytes. Another instance may replace the workspace
    (and delete the old blob) between reading the record and reading the blob: then `read`
    the record again and follow it. :raises NotFound: :raises IntegrityFailed:"""
    for _ in range(_ATTEMPTS):
        try:
            return record, load(binding, record)
        except NotFound:
            fresh = read()
            if fresh.get("stateBlob") == record.get("stateBlob"):
                raise  # not a replacement: the blob itself is missing
            record = fresh
    raise Conflict("the workspace kept changing while it was read; try again")


_ATTEMPTS = 3


def discard(record: dict) -> None:
    if record.get("stateBlob"):
        blobs.delete(record["stateBlob"])
