"""Idempotency-Key (IETF httpapi draft): a publish or snapshot retried with the key of an earlier
attempt (after a cut connection or a 503) ends with one service or snapshot, never two.

No table of its own: the key decides the new entity's identity (a dev version's GUID, a
snapshot's id) and the names of its blobs, and the entity carries the key, so the entity's
create-only insert is the one commit. A retry that finds the entity made under its key answers
as the first attempt did; the blobs an interrupted attempt wrote have the names the retry
writes (or are removed by the attempt that commits)."""
from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass

import xxhash

from . import ids
from .errors import KeyReused

HEADER = "Idempotency-Key"
_NAMESPACE = uuid.UUID("6f3c0d55-4a0e-4c1e-9a43-0b3d1a16e0c4")


@dataclass(frozen=True)
class Key:
    token: str  # whose key, for which operation: stored in the entity
    fingerprint: str  # what was asked

    def id(self) -> str:
        """The new entity's id (a GUID, as the API gives)."""
        return str(uuid.uuid5(_NAMESPACE, self.token))

    def blob_id(self, data: bytes) -> str:
        """A blob's name (under its entity's folder): the same for the same bytes and key."""
        return f"{self.token[:32]}-{xxhash.xxh3_128_hexdigest(data)}"

    def blobs_under(self, folder: str) -> str:
        """The prefix of every blob any attempt with this key wrote in `folder`."""
        return f"{folder}/{self.token[:32]}-"

    def fields(self) -> dict[str, str]:
        return {"idempotencyKey": self.token, "requestHash": self.fingerprint}

    def made(self, row: dict) -> bool:
        """Whether `row` is what an earlier attempt with this key made.
        :raises KeyReused: it was made with this key for another request."""
        if row.get("idempotencyKey") != self.token:
            return False
        if row.get("requestHash") != self.fingerprint:
            raise KeyReused(f"this {HEADER} was used for another request: send a new key for a new request")
        return True


def key(raw: str | None, user: str, operation: str, request: object) -> Key | None:
    """The caller's key, scoped to the caller and the operation, with the request's fingerprint.
    :raises BadRequest: a key that is not 1-200 visible ASCII characters."""
    if ids.idempotency_key(raw) is None:
        return None
    token = hashlib.sha256(json.dumps([user, operation, raw]).encode()).hexdigest()
    fingerprint = hashlib.sha256(json.dumps(request, sort_keys=True, default=_digest).encode()).hexdigest()
    return Key(token, fingerprint)


def _digest(value: object) -> str:
    if isinstance(value, (bytes, bytearray)):
        return xxhash.xxh3_128_hexdigest(bytes(value))
    raise TypeError(type(value).__name__)
