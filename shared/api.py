"""Declaring an API operation once: its route and method (registered with the Functions
blueprint) and its contract (read by the core swagger document)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import azure.functions as func

from .http import Handler, endpoint


@dataclass(frozen=True)
class Operation:
    method: str
    route: str
    operation_id: str
    tag: str
    summary: str
    body: str | None = None  # a model name, "octet" or "multipart"
    status: int = 200
    returns: str | None = None  # a model name, "[Model]", "string", "[string]" or "file"
    query: tuple[str, ...] = ()
    authenticated: bool = True
    errors: tuple[int, ...] = field(default=(401,))
    core: bool = True  # part of the core swagger (consumption lives in each service's own)
    #: the answer when storage is down before the caller could be identified (else 503)
    outage: Callable[[], func.HttpResponse] | None = None


OPERATIONS: list[Operation] = []


def operation(bp: func.Blueprint, method: str, route: str, operation_id: str, *, tag: str, summary: str,
              **contract: object) -> Callable[[Handler], Handler]:
    op = Operation(method, route, operation_id, tag, summary, **contract)  # type: ignore[arg-type]
    OPERATIONS.append(op)

    def decorate(fn: Handler) -> Handler:
        return bp.route(route=route, methods=[method])(endpoint(authenticated=op.authenticated, outage=op.outage)(fn))

    return decorate
