"""HMAC seal of stored workspaces. The entity that names a blob carries its SHA-256 and a MAC
over (binding, SHA-256); bytes are handed to a worker for unpickling only if both match."""
from __future__ import annotations

import hashlib
import hmac

from .config import get_settings
from .errors import IntegrityFailed


def seal(binding: str, data: bytes) -> dict[str, str]:
    digest = hashlib.sha256(data).hexdigest()
    return {"stateSha256": digest, "stateMac": _mac(binding, digest)}


def verify(binding: str, data: bytes, record: dict) -> None:
    """:raises IntegrityFailed: the bytes or their seal were changed, or belong to something else."""
    digest = hashlib.sha256(data).hexdigest()
    expected = _mac(binding, digest)
    if not (hmac.compare_digest(digest, str(record.get("stateSha256", "")))
            and hmac.compare_digest(expected, str(record.get("stateMac", "")))):
        raise IntegrityFailed("the stored workspace does not match its seal; it was not loaded")


def _mac(binding: str, digest: str) -> str:
    key = get_settings().snapshot_signing_key.encode()
    return hmac.new(key, f"v1|{binding}|{digest}".encode(), hashlib.sha256).hexdigest()
