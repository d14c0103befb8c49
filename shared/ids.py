"""Identifiers and names: what the API accepts, checked before anything reaches storage."""
from __future__ import annotations

import datetime as dt
import re
import uuid

from .errors import BadRequest, NotFound

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Table keys refuse / \ # ? and control characters; names are also used in blob paths. Used
# with fullmatch: a "$" anchor would let a final newline through.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def new_id() -> str:
    return str(uuid.uuid4())


def existing_id(value: str, what: str) -> str:
    """An id from a URL; anything that is not an id we issued is simply not found."""
    if not _UUID.fullmatch(value or ""):
        raise NotFound(f"{what} '{(value or '')[:64]}' not found")
    return value.lower()


def service_name(value: str, what: str = "service name") -> str:
    if not _NAME.fullmatch(value or ""):
        raise BadRequest(f"the {what} '{(value or '')[:64]}' is not allowed: use 1-128 letters, digits, '.', '_' "
                         "or '-', starting with a letter or digit")
    return value


def file_name(value: str) -> str:
    """A session working-directory file name: no paths, nothing that leaves the directory."""
    if not _NAME.fullmatch(value or "") or value in (".", ".."):
        raise BadRequest(f"the file name '{(value or '')[:64]}' is not allowed: use 1-128 letters, digits, '.', "
                         "'_' or '-', with no directory part")
    return value


def object_name(value: str) -> str:
    if not (value or "").isidentifier():
        raise BadRequest(f"the workspace object name '{(value or '')[:64]}' must be a Python identifier")
    return value


def runtime(body: dict) -> str:
    value = body.get("runtimeType")
    if not isinstance(value, str) or value.lower() != "python":
        got = "missing" if value is None else f"'{str(value)[:16]}'"
        raise BadRequest(f"runtimeType is {got}: o16n serves Python only, so send \"runtimeType\": \"Python\" "
                         "(ML Server defaulted to R)")
    return "Python"


def optional_str(body: dict, key: str, *, max_units: int = 30000) -> str | None:
    """A string field, at most `max_units` long as Table storage counts (UTF-16 code units)."""
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"'{key}' must be a string")
    if value is not None and utf16_units(value) > max_units:
        raise BadRequest(f"'{key}' is longer than {max_units} characters")
    return value


def utf16_units(text: str) -> int:
    """Length as Table storage counts it (an emoji is two)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def cut_utf16(text: str, units: int) -> str:
    """`text` cut to at most `units` UTF-16 code units (never inside a character)."""
    if len(text) * 2 <= units:
        return text
    return text.encode("utf-16-le", "surrogatepass")[:units * 2].decode("utf-16-le", "ignore")


def now() -> str:
    """ML Server's timestamp shape: no zone, seven fraction digits (UTC)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0"
