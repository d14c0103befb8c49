"""Immutable blobs: each write creates a new name, so a reader never sees half a write and
the Table entity that names the blob is the commit point."""
from __future__ import annotations

from azure.core.exceptions import ResourceNotFoundError

from ._clients import container, translated


def put(name: str, data: bytes) -> None:
    with translated("blob"):
        container().upload_blob(name, data, overwrite=False)


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
