"""Declaring an API operation once: its route and method (registered with the Functions
blueprint) and its contract (read by the core swagger document)."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import azure.functions as func

from . import ids
from .http import Handler, endpoint


@dataclass(frozen=True)
class Operation:
    method: str
    route: str
    operation_id: str
    tag: str
    summary: str
    body: str | None = None  # a model name, "octet", "multipart" or "realtime"
    body_required: bool = True
    status: int = 200
    returns: str | None = None  # a model name, "[Model]", "string", "[string]" or "file"
    produces: str = "application/octet-stream"  # the media type of a "file"
    query: tuple[str, ...] = ()
    optional_query: tuple[str, ...] = ()  # shared.swagger.QUERY
    headers: tuple[str, ...] = ()  # optional request headers (shared.swagger.HEADERS)
    etag: bool = False  # the success carries an ETag header
    authenticated: bool = True
    # statuses beyond those every operation of its kind answers (see error_statuses)
    errors: tuple[int, ...] = ()
    core: bool = True  # part of the core swagger (consumption lives in each service's own)
    #: the answer when storage is down before the caller could be identified (else 503)
    outage: Callable[[], func.HttpResponse] | None = None

    @property
    def error_statuses(self) -> list[int]:
        """Every error status the operation can answer."""
        codes = {503, *self.errors}  # storage can fail: every operation reads it (authentication does)
        if self.authenticated:
            codes |= {401, 403}  # 403: an Entra token without an o16n role, or a role refused here
        if self.body:
            codes |= {400, 413}  # a body that is not what the operation takes, or too large
            if self.body != "octet":
                codes.add(415)  # not sent as application/json (or multipart/form-data)
        if "If-Match" in self.headers:
            codes.add(412)
        return sorted(codes)


OPERATIONS: list[Operation] = []


def operation(bp: func.Blueprint, method: str, route: str, operation_id: str, *, tag: str, summary: str,
              **contract: object) -> Callable[[Handler], Handler]:
    op = Operation(method, route, operation_id, tag, summary, **contract)  # type: ignore[arg-type]
    OPERATIONS.append(op)

    def decorate(fn: Handler) -> Handler:
        checks = [(h, _HEADER_CHECKS[h]) for h in op.headers if h in _HEADER_CHECKS]
        if checks:
            fn = _checking_headers(fn, checks)
        return bp.route(route=route, methods=[method])(endpoint(authenticated=op.authenticated, outage=op.outage)(fn))

    return decorate


# The request headers whose shape the document declares, refused (400) when sent otherwise.
_HEADER_CHECKS: dict[str, Callable[[str | None], object]] = {"Idempotency-Key": ids.idempotency_key}


def _checking_headers(fn: Handler, checks: list[tuple[str, Callable[[str | None], object]]]) -> Handler:
    if inspect.iscoroutinefunction(fn):
        raise TypeError(f"{fn.__name__}: declared headers are checked for synchronous handlers only")

    def checked(req: func.HttpRequest, *args: object) -> func.HttpResponse:
        for name, check in checks:
            check(req.headers.get(name))
        return fn(req, *args)

    checked.__name__, checked.__qualname__, checked.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
    return checked
