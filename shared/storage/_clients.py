"""Service clients built once per process from settings, with short timeouts so an outage
answers 503 quickly instead of after the SDK's 80 s of retries."""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from functools import lru_cache

from azure.core.exceptions import (AzureError, HttpResponseError, ResourceExistsError, ResourceModifiedError,
                                   ResourceNotFoundError)
from azure.data.tables import TableClient, TableServiceClient
from azure.storage.blob import BlobServiceClient, ContainerClient

from ..config import get_settings
from ..errors import BadRequest, Conflict, NotFound, PayloadTooLarge, PreconditionFailed, Unavailable

_lock = threading.Lock()
_TOO_LARGE = {"EntityTooLarge", "PropertyValueTooLarge", "RequestBodyTooLarge"}
_ready: set[str] = set()


#: HTTP requests sent to storage by this process (what the tests and /status count)
requests_sent = 0
_count_lock = threading.Lock()


def _count(request) -> None:  # noqa: ANN001 - azure-core's PipelineRequest
    global requests_sent
    with _count_lock:
        requests_sent += 1


def _kwargs() -> dict:
    t = get_settings().storage_timeout_seconds
    return {"retry_total": 2, "retry_backoff_factor": 0.2, "initial_backoff": 0.2, "connection_timeout": t,
            "read_timeout": t, "raw_request_hook": _count}


@lru_cache(maxsize=1)
def _blob_service() -> BlobServiceClient:
    s = get_settings()
    if s.storage_connection_string:
        return BlobServiceClient.from_connection_string(s.storage_connection_string, **_kwargs())
    from azure.identity import DefaultAzureCredential
    return BlobServiceClient(s.storage_blob_endpoint, credential=DefaultAzureCredential(), **_kwargs())


@lru_cache(maxsize=1)
def _table_service() -> TableServiceClient:
    s = get_settings()
    if s.storage_connection_string:
        return TableServiceClient.from_connection_string(s.storage_connection_string, **_kwargs())
    from azure.identity import DefaultAzureCredential
    return TableServiceClient(s.storage_table_endpoint, credential=DefaultAzureCredential(), **_kwargs())


def table(suffix: str) -> TableClient:
    name = f"{get_settings().storage_prefix}{suffix}"
    client = _table_service().get_table_client(name)
    if name not in _ready:
        with _lock, translated("table"):
            _table_service().create_table_if_not_exists(name)
            _ready.add(name)
    return client


def container() -> ContainerClient:
    name = f"{get_settings().storage_prefix.lower()}-data"
    client = _blob_service().get_container_client(name)
    if name not in _ready:
        with _lock, translated("container"):
            try:
                client.create_container()
            except ResourceExistsError:
                pass
            _ready.add(name)
    return client


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
        raise Unavailable("storage is not answering; try again shortly") from None
    except AzureError:
        raise Unavailable("storage is not answering; try again shortly") from None
