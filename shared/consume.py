"""Consuming a service: cached definition, typed input check, the warm worker, the reply."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from . import realtime, services, types, workspaces
from .auth import Principal
from .config import get_settings
from .errors import NeedsStorage, NotFound, ServiceBusy
from .sandbox import pool
from .sandbox.pool import WorkerBusy, WorkerDied, WorkerTimeout

log = logging.getLogger("o16n.consume")


def consume(user: Principal, name: str, version: str, body: dict, *, retry: bool = True,
            deadline: float | None = None, handovers: int = 0, deaths: int = 0) -> dict:
    """One call; its load, the call and any retry share one EXECUTION_TIMEOUT_SECONDS budget.
    A call that never reached its worker (retired meanwhile: the service was changed) goes to
    the next one, a few times; so does one whose worker died under it, `deaths` times (batch
    records: a worker ended from outside must not fail the record it was scoring)."""
    deadline = deadline or time.monotonic() + get_settings().execution_timeout_seconds
    svc, key, message = _checked(user, name, version, body, cached_only=False)

    def left() -> float:
        return max(deadline - time.monotonic(), 0.001)

    start = _starter(svc, key, left)
    worker: pool.Worker | None = None
    try:
        worker = pool.services.checkout(key, svc.get("etag"), start, services.code_by(svc))
        if worker.busy:
            _grow(svc, key)
        reply = worker.call(message, timeout=left())
    except _Stale:
        # The cached definition names a workspace another instance has replaced (and deleted).
        services.forget(*key)
        if not retry:
            raise NotFound(f"service '{name[:128]}' version '{version[:128]}' not found") from None
        return consume(user, name, version, body, retry=False, deadline=deadline)
    except ServiceLoadFailed as exc:
        return failed(svc, exc.message)
    except (WorkerBusy, WorkerTimeout, WorkerDied) as exc:
        if deaths and isinstance(exc, WorkerDied):
            _retire(key, worker)
            return consume(user, name, version, body, retry=retry, deadline=deadline, handovers=handovers,
                           deaths=deaths - 1)
        answer = _worker_failed(svc, key, exc, retry or handovers < _HANDOVERS, worker)
        if answer is None:
            return consume(user, name, version, body, retry=False, deadline=deadline, handovers=handovers + 1)
        return answer
    return _answer(svc, key, reply, worker)


_HANDOVERS = 4


def _starter(svc: dict, key: tuple[str, str], left: Callable[[], float]) -> Callable[[pool.Worker], None]:
    """Loads the service into a new worker. :raises _Stale: :raises ServiceLoadFailed:"""
    def start(worker: pool.Worker) -> None:
        try:
            data = workspaces.load(services.binding(*key), svc)
        except NotFound:
            raise _Stale() from None
        if svc["_realtime"] is not None:
            load = {"op": "load_realtime", "model": data or b"", "info": svc["_realtime"]}
        else:
            load = {"op": "load_service", "state": data or None, "code": svc.get("code", ""),
                    "initCode": svc.get("initCode", ""), "inputs": svc["_inputs"], "outputs": svc["_outputs"],
                    "outputFileNames": svc["_files"]}
        reply = worker.call(load, timeout=left())
        if not reply.get("ok"):
            raise ServiceLoadFailed(reply.get("error", "the service could not be loaded"))

    return start


def _grow(svc: dict, key: tuple[str, str]) -> None:
    """Another worker for a service whose workers are all busy, loaded in the background."""
    replica = pool.services.growth(key, svc.get("etag"))
    if replica is None:
        return
    timeout = get_settings().execution_timeout_seconds
    deadline = time.monotonic() + timeout

    def load() -> None:
        try:
            pool.services.grow(key, svc.get("etag"),
                               _starter(svc, key, lambda: max(deadline - time.monotonic(), 0.001)), replica,
                               services.code_by(svc))
        except Exception:  # noqa: BLE001 - the calls go on with the workers there are
            log.info("another worker for service %s/%s could not be started", *key)

    threading.Thread(target=load, name="o16n-grow", daemon=True).start()


async def consume_async(user: Principal, name: str, version: str, body: dict) -> dict:
    """consume() on the event loop, for a service whose definition is cached and whose worker is
    warm: no thread hop. Anything else (a load, a storage read) is consume() in a thread."""
    deadline = time.monotonic() + get_settings().execution_timeout_seconds
    try:
        svc, key, message = _checked(user, name, version, body, cached_only=True)
    except NeedsStorage:
        return await asyncio.to_thread(consume, user, name, version, body)
    worker = pool.services.warm(key, svc.get("etag"))
    if worker is None:
        return await asyncio.to_thread(consume, user, name, version, body)
    if worker.busy:
        _grow(svc, key)
    try:
        reply = await worker.call_async(message, timeout=deadline - time.monotonic())
    except (WorkerBusy, WorkerTimeout, WorkerDied) as exc:
        answer = _worker_failed(svc, key, exc, True, worker)
        if answer is None:
            return await asyncio.to_thread(consume, user, name, version, body, retry=False, deadline=deadline)
        return answer
    return _answer(svc, key, reply, worker)


def _checked(user: Principal, name: str, version: str, body: dict, *,
             cached_only: bool) -> tuple[dict, tuple[str, str], dict]:
    """The service, its key and the consume message for its worker (inputs checked).
    :raises NotFound: :raises BadRequest: :raises NeedsStorage: with `cached_only`"""
    svc = services.cached(name, version, cached_only=cached_only)
    if not services.visible(user, svc):
        raise NotFound(f"service '{name[:128]}' version '{version[:128]}' not found")
    return svc, (svc["PartitionKey"], svc["RowKey"]), {"op": "consume", "inputs": checked_inputs(svc, body)}


def checked_inputs(svc: dict, body: dict) -> dict:
    """:raises BadRequest: naming the input"""
    inputs = types.check_inputs(svc["_inputs"], body)
    if svc["_realtime"] is not None:
        inputs = realtime.check_columns(svc["_realtime"], realtime.columns_of(inputs[realtime.INPUT]))
    return inputs


def _worker_failed(svc: dict, key: tuple[str, str], exc: Exception, retry: bool,
                   worker: pool.Worker | None) -> dict | None:
    """The answer to a call its worker failed; None when it is to be tried again on a fresh
    worker (an earlier call broke this one). :raises ServiceBusy: the worker stayed busy"""
    if isinstance(exc, WorkerBusy):
        raise ServiceBusy("the service is busy with other calls; try again", retry_after=1) from None
    _retire(key, worker)
    if isinstance(exc, WorkerTimeout):
        timeout = get_settings().execution_timeout_seconds
        return failed(svc, f"the service did not answer within {timeout:g} seconds and was stopped")
    if getattr(exc, "earlier", False) and retry:
        return None
    return failed(svc, str(exc))


def _retire(key: tuple[str, str], worker: pool.Worker | None) -> None:
    if worker is None:
        pool.services.retire(key)
    else:
        pool.services.retire_worker(key, worker)


def _answer(svc: dict, key: tuple[str, str], reply: dict, worker: pool.Worker) -> dict:
    if not reply.pop("ok", False):
        _retire(key, worker)
        return failed(svc, reply.get("error", "the worker failed"))
    return reply


class _Stale(Exception):
    pass


class ServiceLoadFailed(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def failed(svc: dict | None, message: str) -> dict:
    """A WebServiceResult for a call that failed (`svc` None: the service is gone)."""
    out = {"success": False, "errorMessage": message, "consoleOutput": "", "changedFiles": [],
           "outputParameters": {}}
    if svc and svc["_files"]:
        out["outputFiles"] = {f: None for f in svc["_files"]}
    return out
