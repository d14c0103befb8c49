"""Frames between host and worker: a 4-byte big-endian length, then UTF-8 JSON. JSON, not
pickle, so the host never unpickles anything a worker sends."""
from __future__ import annotations

import json
import struct
from typing import Any

HEADER = struct.Struct(">I")


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, allow_nan=False, separators=(",", ":")).encode()
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    return json.loads(body)
