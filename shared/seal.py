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
    """:raises IntegrityFailed: the bytes or their seal were changed, or belong to something else.
    During a key rotation a seal made with SNAPSHOT_SIGNING_KEY_PREVIOUS still verifies."""
    digest = hashlib.sha256(data).hexdigest()
    s = get_settings()
    stored = str(record.get("stateMac", ""))
    macs = [_mac(binding, digest, key) for key in (s.snapshot_signing_key, s.snapshot_signing_key_previous) if key]
    if not (hmac.compare_digest(digest, str(record.get("stateSha256", "")))
            and any(hmac.compare_digest(m, stored) for m in macs)):
        raise IntegrityFailed("the stored workspace does not match its seal; it was not loaded")


def _mac(binding: str, digest: str, key: str | None = None) -> str:
    key = get_settings().snapshot_signing_key if key is None else key
    return hmac.new(key.encode(), f"v1|{binding}|{digest}".encode(), hashlib.sha256).hexdigest()
