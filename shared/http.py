"""The edge between Azure Functions and the core: body parsing, authentication and the one
place where errors become responses."""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import json
import logging
import math
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import azure.functions as func

from . import accounts, auth, storage
from .config import get_settings
from .errors import (ApiError, BadRequest, ConfigError, Misconfigured, NeedsStorage, PayloadTooLarge,
                     StorageUnavailable, Unavailable, UnsupportedMediaType)

log = logging.getLogger("o16n")

Handler = Callable[..., func.HttpResponse]


def endpoint(*, authenticated: bool = True,
             outage: Callable[[], func.HttpResponse] | None = None) -> Callable[[Handler], Handler]:
    """Wrap a handler: authenticate (the principal is passed as `user`), and turn any
    ApiError into its JSON error body. `outage` answers instead when storage is down before
    the caller could be identified. The wrapper keeps the `(req)` signature the Functions
    worker checks against the binding names."""

    def decorate(fn: Handler) -> Handler:
        if inspect.iscoroutinefunction(fn):
            return _on_loop(fn, authenticated)

        def wrapper(req: func.HttpRequest) -> func.HttpResponse:
            try:
                get_settings()  # a wrong setting answers before anything else (see misconfigured)
                with storage.request_scope():
                    accounts.sweep_soon()
                    if not authenticated:
                        return fn(req)
                    try:
                        user = auth.authenticate(req.headers.get("authorization"))
                    except StorageUnavailable:
                        if outage is None:
                            raise
                        return outage()
                    return fn(req, user)
            except ApiError as exc:
                return error_response(exc)
            except ConfigError as exc:
                return misconfigured(exc)
            except Exception:  # noqa: BLE001 - the last line of defence: log, never leak
                return _internal_error()

        return _named_as(wrapper, fn)

    return decorate


def misconfigured(exc: ConfigError) -> func.HttpResponse:
    """503 naming the setting (a ConfigError names settings, never their values), logged once.
    Azure indexes and starts the app whatever its settings: this is how a deployment says so."""
    global _misconfigured_logged
    message = f"o16n is not configured: {exc}. Fix the app setting; the app reads it again at its next start"
    if not _misconfigured_logged:
        _misconfigured_logged = True
        log.error(message)
    return error_response(Misconfigured(message, retry_after=60), quiet=True)


_misconfigured_logged = False


def _internal_error() -> func.HttpResponse:
    cid = str(uuid.uuid4())
    log.exception("unhandled error, correlationId=%s", cid)
    return _json({"message": "internal error", "exceptionType": "InternalError", "error": "internal_error",
                  "correlationId": cid}, 500)


def _named_as(wrapper: Handler, fn: Callable[..., Any]) -> Handler:
    # Not functools.wraps: its __wrapped__ would show the worker fn's (req, user) signature.
    wrapper.__name__ = fn.__name__
    wrapper.__qualname__ = fn.__qualname__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _on_loop(fn: Callable[..., Any], authenticated: bool) -> Handler:
    """The wrapper of an `async` handler: it runs on the event loop (the Functions worker runs
    async functions there), and whatever would need storage goes to a thread."""

    async def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        try:
            get_settings()
            with storage.request_scope():  # threads started below copy it, and do not share back
                accounts.sweep_soon()
                if authenticated:
                    header = req.headers.get("authorization")
                    try:
                        user = auth.authenticate(header, cached_only=True)
                    except NeedsStorage:
                        user = await asyncio.to_thread(auth.authenticate, header)
                    return await fn(req, user)
                return await fn(req)
        except ApiError as exc:
            return error_response(exc)
        except ConfigError as exc:
            return misconfigured(exc)
        except Exception:  # noqa: BLE001 - the last line of defence: log, never leak
            return _internal_error()

    return _named_as(wrapper, fn)


def error_response(exc: ApiError, *, quiet: bool = False) -> func.HttpResponse:
    cid = str(uuid.uuid4())
    if not quiet:
        level = logging.WARNING if exc.status >= 500 else logging.INFO
        log.log(level, "%s %s: %s correlationId=%s", exc.status, exc.code, exc.message, cid)
    body = {"message": exc.message, "exceptionType": type(exc).__name__, "error": exc.code,
            "correlationId": cid}
    headers = dict(exc.headers)
    if exc.status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer error="invalid_token"')
    return _json(body, exc.status, headers)


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return _json(value, status, headers)


#: on every API answer: a browser never takes JSON or a user's file for HTML or script
_NOSNIFF = {"X-Content-Type-Options": "nosniff"}


def _json(value: Any, status: int, headers: dict[str, str] | None = None) -> func.HttpResponse:
    body = json.dumps(value, allow_nan=False, separators=(",", ":"))
    return func.HttpResponse(body, status_code=status, headers={**_NOSNIFF, **(headers or {})},
                             mimetype="application/json")


def bytes_response(data: bytes, *, mimetype: str, filename: str | None = None) -> func.HttpResponse:
    headers = {**_NOSNIFF, "Content-Disposition": content_disposition(filename)} if filename else dict(_NOSNIFF)
    return func.HttpResponse(data, status_code=200, headers=headers, mimetype=mimetype)


def content_disposition(filename: str) -> str:
    """RFC 6266: an ASCII fallback, and the exact name as UTF-8 in `filename*` (RFC 8187)."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _reject_constant(name: str) -> Any:
    raise BadRequest(f"the JSON body contains {name}, which JSON does not allow")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(f"the JSON body holds the number {text[:32]}, which is too large for a 64-bit float")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise BadRequest(f"the JSON body repeats the key '{key}'")
        obj[key] = value
    return obj


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _no_lone_surrogates(value: Any) -> None:
    """JSON may escape half of a UTF-16 pair alone; such a string is no text and cannot be stored."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest("the JSON body holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text")
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


def parse_json(raw: bytes) -> Any:
    """Strict JSON: no NaN/Infinity, no duplicate keys, bounded depth, valid UTF-8."""
    if len(raw) > get_settings().max_request_bytes:
        raise PayloadTooLarge(f"the request body is larger than {get_settings().max_request_bytes} bytes")
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite,
                           object_pairs_hook=_no_duplicates)
        if _SURROGATE_ESCAPE.search(text):  # rare: walk the value only when an escape could be lone
            _no_lone_surrogates(value)
        return value
    except UnicodeDecodeError:
        raise BadRequest("the request body is not valid UTF-8") from None
    except RecursionError:
        raise BadRequest("the JSON body is nested too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"the request body is not valid JSON: {str(exc).split(':')[0]}") from None


# json.loads holds the GIL until it is done: large bodies are parsed one at a time, so the
# event loop gets the interpreter between them
_parsing = threading.Lock()


def read_large_json(req: func.HttpRequest, *, required: bool = True) -> dict[str, Any]:
    """read_json for a large body, in a thread. :raises Unavailable: others kept it busy for 30 s"""
    with _one_large_body():
        return read_json(req, required=required)


def parse_large_json(raw: bytes) -> Any:
    """parse_json for a large body, one at a time per instance (their parsed forms take several
    times their size). :raises Unavailable: others kept it busy for 30 s"""
    with _one_large_body():
        return parse_json(raw)


@contextlib.contextmanager
def _one_large_body() -> Iterator[None]:
    if not _parsing.acquire(timeout=30):
        raise Unavailable("other large requests are being read on this instance; try again shortly", retry_after=2)
    try:
        yield
    finally:
        _parsing.release()


def read_json(req: func.HttpRequest, *, required: bool = True) -> dict[str, Any]:
    """The request's JSON object body; an empty body is `{}` unless required."""
    raw = req.get_body() or b""
    if not raw.strip():
        if required:
            raise BadRequest("a JSON object body is required")
        return {}
    value = parse_json(json_body(req))
    if not isinstance(value, dict):
        raise BadRequest("the JSON body must be an object")
    return value


def json_body(req: func.HttpRequest) -> bytes:
    """The raw body, sent as JSON. :raises UnsupportedMediaType:"""
    ctype = (req.headers.get("content-type") or "").split(";")[0].strip().lower()
    # Not text/plain nor a missing type: those a page on another site can send without a CORS preflight.
    if ctype != "application/json" and not (ctype.startswith("application/") and ctype.endswith("+json")):
        raise UnsupportedMediaType(f"send the body with 'Content-Type: application/json', not "
                                   f"{ctype[:64] or 'no Content-Type'}")
    return req.get_body() or b""


def client_address(req: func.HttpRequest) -> str:
    """The caller's address: the last entry of CLIENT_ADDRESS_HEADER, the one Azure's front end
    (or the local host) appended; entries before it are whatever the client sent. IPv6 callers
    are known by their /64."""
    # Without the configured header (a caller that reached the app around Front Door), the
    # entry Azure's front end appended, rather than one "unknown" address shared by all of them.
    raw = req.headers.get(get_settings().client_address_header) or req.headers.get("X-Forwarded-For") or ""
    last = raw.split(",")[-1].strip()
    if last.startswith("["):  # [v6]:port
        last = last[1:].partition("]")[0]
    elif last.count(":") == 1:  # v4:port
        last = last.partition(":")[0]
    try:
        address = ipaddress.ip_address(last)
    except ValueError:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        # One IPv6 host usually holds a whole /64: count it as one address.
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def route(req: func.HttpRequest, name: str) -> str:
    return req.route_params.get(name, "")


def read_bytes(req: func.HttpRequest) -> bytes:
    raw = req.get_body() or b""
    if len(raw) > get_settings().max_request_bytes:
        raise PayloadTooLarge(f"the request body is larger than {get_settings().max_request_bytes} bytes")
    return raw


def _multipart(req: func.HttpRequest, file_field: str) -> tuple[Any, Any]:
    """The files and text fields of a multipart/form-data request. :raises UnsupportedMediaType:"""
    read_bytes(req)
    ctype = (req.headers.get("content-type") or "").lower()
    if not ctype.startswith("multipart/form-data"):
        raise UnsupportedMediaType(f"send multipart/form-data with the file in the form field '{file_field}'")
    try:
        return req.files, req.form
    except ValueError:
        raise BadRequest("the multipart form could not be read") from None


def read_form(req: func.HttpRequest, file_field: str, *, file_required: bool) -> tuple[dict[str, str], bytes | None]:
    """A multipart/form-data request's text fields and its one file (by form field name)."""
    files, form = _multipart(req, file_field)
    if set(files) - {file_field}:
        raise BadRequest(f"the form carries the file '{sorted(set(files) - {file_field})[0][:64]}'; "
                         f"only '{file_field}' is read")
    if file_field in form:  # its bytes were decoded as text already: not recoverable
        raise BadRequest(f"send '{file_field}' as a file part of the form (with a filename), not as a text field")
    part = files.get(file_field)
    if part is None and file_required:
        raise BadRequest(f"the multipart form has no file in the field '{file_field}'")
    fields = {}
    for key in form:
        values = form.getlist(key)
        if len(values) != 1:
            raise BadRequest(f"the form field '{key[:64]}' is sent more than once")
        fields[key] = values[0]
    return fields, part.read() if part is not None else None


def read_upload(req: func.HttpRequest, field: str) -> tuple[str, bytes]:
    """The one file of a multipart/form-data request, by form field name; nothing else is taken."""
    files, form = _multipart(req, field)
    extra = sorted((set(files) | set(form)) - {field})
    if extra:
        raise BadRequest(f"the form carries the field '{extra[0][:64]}'; only the file '{field}' is read")
    part = files.get(field)
    if part is None:
        raise BadRequest(f"the multipart form has no file in the field '{field}'")
    return part.filename or "", part.read()
