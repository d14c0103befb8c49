"""Service clients built once per process from settings. Each storage call has a deadline
(STORAGE_TIMEOUT_SECONDS, its retries included) so an outage answers 503 quickly instead of
after the SDK's 80 s of retries, and once a call of a request has failed that way, the
request's later calls fail at once: a request never waits for storage twice."""
from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from functools import lru_cache

from azure.core.exceptions import (AzureError, HttpResponseError, ResourceExistsError, ResourceModifiedError,
                                   ResourceNotFoundError, ServiceRequestError)
from azure.data.tables import TableClient, TableServiceClient
from azure.storage.blob import BlobServiceClient, ContainerClient
from azure.storage.queue import QueueClient, QueueServiceClient

from ..config import get_settings
from ..errors import BadRequest, Conflict, NotFound, PayloadTooLarge, PreconditionFailed, StorageUnavailable

# azure-core logs each request's URL (account, table, blob and service names) at INFO, the level
# the Functions host runs at: storage is reported here, through the errors it raises.
logging.getLogger("azure").setLevel(logging.WARNING)
_TOO_LARGE = {"EntityTooLarge", "PropertyValueTooLarge", "RequestBodyTooLarge"}
_ready: set[str] = set()


#: HTTP requests sent to storage by this process (what the tests and /status count)
requests_sent = 0
_count_lock = threading.Lock()
#: in an API request: whether one of its storage calls failed for want of an answer (None outside)
_failed: contextvars.ContextVar[bool | None] = contextvars.ContextVar("storage_failed", default=None)
_DEADLINE = "o16n_deadline"
#: attempts the last storage call of this thread made (the SDK's retries included)
_attempts: contextvars.ContextVar[int] = contextvars.ContextVar("storage_attempts", default=0)


@contextlib.contextmanager
def request_scope() -> Iterator[None]:
    """Around each API request: its storage calls share what failed (see the module's doc)."""
    token = _failed.set(False)
    try:
        yield
    finally:
        _failed.reset(token)


def request_failed() -> bool:
    """Whether a storage call of this API request already failed for want of an answer."""
    return bool(_failed.get())


def _attempt(request) -> None:  # noqa: ANN001 - azure-core's PipelineRequest
    """Before each attempt of a call (the SDK's retries included): what is left of the call's
    deadline bounds the attempt's connect and read timeouts."""
    global requests_sent
    if _failed.get():
        raise ServiceRequestError("storage already failed during this request")
    now = time.monotonic()
    deadline = request.context.get(_DEADLINE)
    if deadline is None:
        deadline = request.context[_DEADLINE] = now + get_settings().storage_timeout_seconds
    left = deadline - now
    if left <= 0.05:
        raise ServiceRequestError("the storage call's deadline passed")
    request.context.options["connection_timeout"] = left
    request.context.options["read_timeout"] = left
    attempts = request.context["o16n_attempts"] = request.context.get("o16n_attempts", 0) + 1
    _attempts.set(attempts)
    with _count_lock:
        requests_sent += 1


#: Table inserts are POSTs, which the SDK does not retry after an answer was lost. Retrying them
#: is safe here: a table is created "if not exists", and an entity insert recognises its own
#: first attempt (entities.WRITE_ID).
RETRY_POSTS = {"retry_on_methods": frozenset({"POST", "PUT", "DELETE", "GET", "HEAD"})}


def retried() -> bool:
    """Whether the last storage call was sent more than once: then a refusal may answer a retry
    whose first attempt was carried out."""
    return _attempts.get() > 1


def _kwargs() -> dict:
    # Backoffs of a fraction of a second (Blob's default waits 15 s, plus up to 3 s of jitter).
    return {"retry_total": 2, "retry_backoff_factor": 0.2, "initial_backoff": 0.1, "increment_base": 0.2,
            "random_jitter_range": 0.2, "raw_request_hook": _attempt}


@lru_cache(maxsize=1)
def _blob_service() -> BlobServiceClient:
    return _service(BlobServiceClient, get_settings().storage_blob_endpoint)


@lru_cache(maxsize=1)
def _table_service() -> TableServiceClient:
    return _service(TableServiceClient, get_settings().storage_table_endpoint)


@lru_cache(maxsize=1)
def _queue_service() -> QueueServiceClient:
    return _service(QueueServiceClient, get_settings().storage_queue_endpoint)


def _service(cls, endpoint: str):  # noqa: ANN001, ANN202 - one of the three service client classes
    """From the connection string (Azurite, or an account key), else the endpoint with the
    app's managed identity."""
    s = get_settings()
    if s.storage_connection_string:
        return cls.from_connection_string(s.storage_connection_string, **_kwargs())
    from azure.identity import DefaultAzureCredential
    return cls(endpoint, credential=DefaultAzureCredential(), **_kwargs())


def queue(name: str) -> QueueClient:
    client = _queue_service().get_queue_client(name)
    _made_once(name, "queue", client.create_queue)
    return client


def table(suffix: str) -> TableClient:
    name = f"{get_settings().storage_prefix}{suffix}"
    client = _table_service().get_table_client(name)
    if name not in _ready:  # not under a lock: creating twice is harmless, queueing behind a stall is not
        with translated("table"):
            _table_service().create_table_if_not_exists(name, **RETRY_POSTS)
            _ready.add(name)
    return client


def container() -> ContainerClient:
    name = f"{get_settings().storage_prefix.lower()}-data"
    client = _blob_service().get_container_client(name)
    _made_once(name, "container", client.create_container)
    return client


def _made_once(name: str, what: str, create: Callable[[], object]) -> None:
    """Create a queue or container at its first use in this process ("exists" is done)."""
    if name in _ready:
        return
    with translated(what):
        try:
            create()
        except ResourceExistsError:
            pass
        _ready.add(name)


def ping() -> None:
    """:raises Unavailable: storage does not answer."""
    with translated("storage"):
        _table_service().get_service_properties()


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    try:
        yield
    except ResourceNotFoundError:
        raise NotFound(f"{what} not found") from None
    except ResourceExistsError:
        raise Conflict(f"{what} already exists") from None
    except ResourceModifiedError:
        raise PreconditionFailed(f"{what} was changed by another request") from None
    except HttpResponseError as exc:
        if exc.status_code == 412:
            raise PreconditionFailed(f"{what} was changed by another request") from None
        if exc.status_code == 413 or getattr(exc, "error_code", None) in _TOO_LARGE:
            raise PayloadTooLarge(f"the {what} is too large to store (a Table entity holds at most 1 MiB, "
                                  "64 KiB per field)") from None
        if exc.status_code == 400:
            raise BadRequest(f"storage refused the {what} key") from None
        raise _unavailable() from None
    except AzureError:
        raise _unavailable() from None


def uncertain(what: str) -> StorageUnavailable:
    """A write sent more than once, refused, and not found in storage as sent: it may have been
    carried out and overwritten since. Nothing it would have referenced may be deleted."""
    return StorageUnavailable(f"storage lost the answer to a write of the {what}; try again")


def _unavailable() -> StorageUnavailable:
    # The SDK's message names the account's URL: never pass it on.
    if _failed.get() is not None:
        _failed.set(True)
    return StorageUnavailable("storage is not answering; try again shortly")
