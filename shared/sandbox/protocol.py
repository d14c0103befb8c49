"""Frames between host and worker: an 8-byte header (JSON length, binary length), UTF-8 JSON,
then raw bytes. JSON, not pickle, so the host never unpickles anything a worker sends; the one
bytes value of a message (a workspace, an object, a file) travels raw beside it, named by "_blob".

`check_reply` is what the host accepts from a worker: anything else means the worker broke the
protocol (user code wrote into its channel) and is stopped."""
from __future__ import annotations

import json
from typing import Any

import struct

HEADER = struct.Struct(">II")
_BLOB_KEY = "_blob"


def _refuse(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# made once: json.dumps/loads with options build a new encoder/decoder on every call
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
_DECODER = json.JSONDecoder(parse_constant=_refuse)
#: digits an integer in a reply may have: turning digits into an int costs time quadratic in
#: their number, so a reply of huge integers would cost the host seconds of CPU per megabyte
MAX_INT_DIGITS = 32


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS + 1:
        raise ValueError(f"an integer of more than {MAX_INT_DIGITS} digits")
    return int(text)


_REPLY_DECODER = json.JSONDecoder(parse_constant=_refuse, parse_int=_bounded_int)


def encode(message: dict[str, Any]) -> list[bytes]:
    """The frame as buffers to send in order (a large blob is not copied into the header's)."""
    blob_key = next((k for k, v in message.items() if isinstance(v, (bytes, bytearray, memoryview))), None)
    blob = b""
    if blob_key is not None:
        message = dict(message)
        blob = message.pop(blob_key)
        message[_BLOB_KEY] = blob_key
    body = _ENCODER.encode(message).encode()
    return [HEADER.pack(len(body), len(blob)) + body, blob] if blob else [HEADER.pack(len(body), 0) + body]


#: what decoding one reply may cost the host: JSON's values become Python objects of up to
#: ~64 bytes each (`[[]]*N` is 2 bytes a value on the wire)
_DECODED_MAX = 256 * 2**20


def too_costly(body: bytes | bytearray) -> str | None:
    """Why decoding `body` would cost the host too much memory, or None."""
    if len(body) > 2**20:
        values = body.count(b",") + body.count(b"[") + body.count(b"{")
        if len(body) + 64 * values > _DECODED_MAX:
            return f"{values} values, more than the host decodes in one reply"
    return None


def decode(body: bytes | bytearray, blob: bytes | None = None, *, reply: bool = False) -> Any:
    """:raises ValueError: not JSON, non-finite numbers, nested too deep, or too many values (in
    a worker's `reply`, also integers of more than MAX_INT_DIGITS digits)"""
    problem = too_costly(body)
    if problem:
        raise ValueError(problem)
    try:
        message = (_REPLY_DECODER if reply else _DECODER).decode(body.decode())
    except RecursionError:
        raise ValueError("nested too deep") from None
    if isinstance(message, dict) and isinstance(message.get(_BLOB_KEY), str):
        message[message.pop(_BLOB_KEY)] = blob or b""
    return message


_STR_LIST = "list of strings"
_OK_REPLIES: dict[str, dict[str, Any]] = {
    "execute": {"success": bool, "errorMessage": str, "consoleOutput": str, "outputParameters": list,
                "changedFiles": _STR_LIST},
    "consume": {"success": bool, "errorMessage": str, "consoleOutput": str, "outputParameters": dict,
                "changedFiles": _STR_LIST},
    "list_objects": {"names": _STR_LIST},
    "list_files": {"names": _STR_LIST},
    "get_object": {"data": bytes},
    "get_file": {"data": bytes},
}
_STATE_OPS = ("execute", "merge_state", "set_object", "delete_object", "put_file", "delete_file")
#: what a consume reply may hold, and nothing else (it goes to the caller as it is)
_CONSUME_KEYS = {"ok", "success", "errorMessage", "consoleOutput", "outputParameters", "changedFiles", "outputFiles"}


def check_reply(op: str, reply: Any) -> str | None:
    """None when `reply` is a well-formed answer to `op`, else what is wrong with it."""
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        return "not a reply"
    if op == "consume" and not set(reply) <= (_CONSUME_KEYS | {"error"}):
        return "keys a consume reply does not have"
    if not reply["ok"]:
        return None if isinstance(reply.get("error", ""), str) else "an error without a message"
    expected = dict(_OK_REPLIES.get(op, {}))
    if op in _STATE_OPS:
        expected["state"] = bytes
    for key, kind in expected.items():
        value = reply.get(key)
        if kind == _STR_LIST:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        else:
            ok = isinstance(value, kind)
        if not ok:
            return f"'{key}' missing or of the wrong type"
    return None
