"""Identifiers and names: what the API accepts, checked before anything reaches storage."""
from __future__ import annotations

import datetime as dt
import re
import uuid

from .errors import BadRequest, NotFound

# What the server accepts, declared once: the checks below use these, and the swagger documents
# are generated from them (shared.models). Patterns are matched whole (fullmatch: a "$" anchor
# would let a final newline through); lengths count characters (code points), as JSON Schema's
# maxLength does.
UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
UUID_LENGTH = 36
# Table keys refuse / \ # ? and control characters; names are also used in blob paths.
NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
NAME_MAX = 128
# Parameter names and operationIds of a service: an ASCII Python identifier, a name every
# client generated from its swagger can use.
IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
IDENTIFIER_MAX = 128
OBJECT_NAME_MAX = 256  # a workspace object's name, as the workspace keeps it
USER_NAME_MAX = 256
PASSWORD_MAX = 1024
TITLE_MAX = 1024  # a session's or a snapshot's name
# code, initCode, description: a Table property holds 64 KiB, and a character takes up to 4 bytes
TEXT_MAX = 16000
MAX_PARAMETERS = 100  # inputs, or outputs, of one service
MAX_OUTPUT_FILES = 100
MAX_CO_PUBLISHERS = 50
# Searched: some character that is not white space (str.isspace), spelled out rather than \S,
# which JavaScript and JSON Schema validators read differently (U+001C-U+001F, U+0085, U+FEFF).
NOT_BLANK = r"[^\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
# The Idempotency-Key header of a publish or a snapshot: visible ASCII
IDEMPOTENCY_KEY = r"[!-~]+"
IDEMPOTENCY_KEY_MAX = 200

_UUID = re.compile(UUID)
_NAME = re.compile(NAME)
_IDENTIFIER = re.compile(IDENTIFIER)
_NOT_BLANK = re.compile(NOT_BLANK)
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY)


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
    """A workspace object's name: any Python identifier (user code makes them) the workspace keeps."""
    if not (value or "").isidentifier() or len(value) > OBJECT_NAME_MAX:
        raise BadRequest(f"the workspace object name '{(value or '')[:64]}' must be a Python identifier of at most "
                         f"{OBJECT_NAME_MAX} characters")
    return value


def identifier(value: object, what: str) -> str:
    """A service's parameter name or operationId."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value) or len(value) > IDENTIFIER_MAX:
        shown = value[:64] if isinstance(value, str) else value
        raise BadRequest(f"{what} '{shown}' is not allowed: use an ASCII Python identifier of at most "
                         f"{IDENTIFIER_MAX} characters (letters, digits and '_', not starting with a digit)")
    return value


def idempotency_key(value: str | None) -> str | None:
    """The Idempotency-Key header, when sent."""
    if value is not None and (len(value) > IDEMPOTENCY_KEY_MAX or not _IDEMPOTENCY_KEY.fullmatch(value)):
        raise BadRequest(f"the Idempotency-Key header must be 1-{IDEMPOTENCY_KEY_MAX} visible ASCII characters "
                         "(no spaces)")
    return value


def not_blank(value: str) -> bool:
    return _NOT_BLANK.search(value) is not None


def runtime(body: dict) -> str:
    value = body.get("runtimeType")
    if not isinstance(value, str) or value.lower() != "python":
        got = "missing" if value is None else f"'{str(value)[:16]}'"
        raise BadRequest(f"runtimeType is {got}: o16n serves Python only, so send \"runtimeType\": \"Python\" "
                         "(ML Server defaulted to R)")
    return "Python"


def optional_str(body: dict, key: str, *, max_length: int = TEXT_MAX) -> str | None:
    """A string field of at most `max_length` characters, or None."""
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"'{key}' must be a string")
    if value is not None and len(value) > max_length:
        raise BadRequest(f"'{key}' is longer than {max_length} characters")
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
