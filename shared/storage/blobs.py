"""Immutable blobs: each write creates a new name, so a reader never sees half a write and
the Table entity that names the blob is the commit point."""
from __future__ import annotations

import xxhash
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from ..errors import Conflict
from ._clients import container, translated

_DIGEST = "xxh3"  # metadata: recognises a retry's own first attempt, never trusted as a seal


def put(name: str, data: bytes) -> None:
    """Create-only. "Already exists" with the same bytes is the SDK's retry meeting its own first
    attempt, whose answer was lost (Put Blob and Put Block List are all-or-nothing): done.
    :raises Conflict: the name holds other bytes."""
    digest = xxhash.xxh3_128_hexdigest(data)
    with translated("blob"):
        client = container()
        try:
            client.upload_blob(name, data, overwrite=False, metadata={_DIGEST: digest})
        except ResourceExistsError:
            if client.get_blob_client(name).get_blob_properties().metadata.get(_DIGEST) != digest:
                raise Conflict("blob already exists") from None


def get(name: str) -> bytes:
    """:raises NotFound: no such blob."""
    with translated("stored content"):
        return container().download_blob(name).readall()


def delete(name: str) -> None:
    """Idempotent: a blob already gone is not an error."""
    with translated("blob"):
        try:
            container().delete_blob(name)
        except ResourceNotFoundError:
            pass


def names(prefix: str) -> list[str]:
    with translated("blob list"):
        return list(container().list_blob_names(name_starts_with=prefix))
