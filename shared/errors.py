"""One error hierarchy. Each class carries its HTTP status; `shared.http.error_response` is the
only place that turns them into responses."""
from __future__ import annotations


class ApiError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class PreconditionFailed(ApiError):
    status, code = 412, "precondition_failed"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class TooManyRequests(ApiError):
    status, code = 429, "too_many_requests"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class IntegrityFailed(ApiError):
    """Stored bytes do not match their seal: refused before anything is unpickled."""
    status, code = 422, "snapshot_integrity_failed"


class KeyReused(ApiError):
    """An Idempotency-Key sent again with another request (the IETF draft's 422)."""
    status, code = 422, "idempotency_key_reused"


class NotImplementedOnFunctions(ApiError):
    status, code = 501, "not_implemented"


class Unavailable(ApiError):
    status, code = 503, "unavailable"

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class Misconfigured(Unavailable):
    """An app setting is missing or wrong: every request answers this until it is fixed."""
    code = "not_configured"


class ServiceBusy(Unavailable):
    """Every worker of the service stayed busy with other calls: nothing was run."""


class StorageUnavailable(Unavailable):
    """Storage did not answer, or failed on its side: a write may or may not have happened, so
    what it would have referenced must not be deleted."""


class NeedsStorage(Exception):
    """Raised by the cache-only paths the event loop uses when answering would need a storage
    read (or another wait): the caller goes on in a thread instead."""


class ConfigError(Exception):
    """A setting is missing or wrong; raised at start-up, never shown to callers."""
