"""One error hierarchy for everything the client raises.

`HttpResponseError` carries what the server said: its message, its error code (`error` in the
body) and the correlation id that finds the request in the server's log."""
from __future__ import annotations

from typing import Any

__all__ = ["O16nError", "HttpResponseError", "ClientAuthenticationError", "ResourceNotFoundError",
           "ResourceExistsError", "ResourceModifiedError", "ServiceError"]


class O16nError(Exception):
    """Base of every error the client raises."""


class HttpResponseError(O16nError):
    """The server answered with an error status.

    :ivar status_code: the HTTP status (None when no request was answered, e.g. sign-in failed)
    :ivar message: the server's message
    :ivar error_code: the server's error code, such as ``not_found`` or ``invalid_token``
    :ivar correlation_id: quote it to whoever reads the server's log"""

    def __init__(self, message: str, *, status_code: int | None = None, error_code: str | None = None,
                 correlation_id: str | None = None, retry_after: float | None = None) -> None:
        self.message = message
        self.status_code = status_code
        self.error_code = error_code
        self.correlation_id = correlation_id
        self.retry_after = retry_after
        super().__init__(message)

    def __str__(self) -> str:
        head = f"({self.status_code}) " if self.status_code else ""
        code = f" [{self.error_code}]" if self.error_code else ""
        cid = f" correlationId={self.correlation_id}" if self.correlation_id else ""
        return f"{head}{self.message}{code}{cid}"


class ClientAuthenticationError(HttpResponseError):
    """401, or signing in failed: the credential is missing, expired, revoked or refused."""


class ResourceNotFoundError(HttpResponseError):
    """404: no such service, session, snapshot or batch (or not one the caller may see)."""


class ResourceExistsError(HttpResponseError):
    """409: for example a service version that is already published (use redeploy)."""


class ResourceModifiedError(HttpResponseError):
    """412: the item changed since its ETag was read."""


class ServiceError(O16nError):
    """A web service ran and its code failed; `response` is the whole ServiceResponse."""

    def __init__(self, message: str, response: Any) -> None:
        self.response = response
        super().__init__(message)


_BY_STATUS = {401: ClientAuthenticationError, 404: ResourceNotFoundError, 409: ResourceExistsError,
              412: ResourceModifiedError}


def from_response(status: int, body: Any, headers: Any) -> HttpResponseError:
    """The error a non-2xx answer stands for; a body that is not o16n's JSON error keeps its text."""
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        message, code, cid = body["message"], body.get("error"), body.get("correlationId")
    else:
        text = body if isinstance(body, str) else ""
        message, code, cid = (text.strip()[:500] or f"the server answered {status}"), None, None
    return _BY_STATUS.get(status, HttpResponseError)(message, status_code=status, error_code=code,
                                                      correlation_id=cid,
                                                      retry_after=retry_after(headers) if headers is not None else None)


def retry_after(headers: Any) -> float | None:
    """Retry-After in seconds (a date, or nonsense, counts as absent)."""
    try:
        value = float(headers.get("Retry-After") or "")
    except (TypeError, ValueError):
        return None
    return value if 0 <= value < 3600 else None

