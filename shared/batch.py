"""Asynchronous batch scoring: ML Server's /api/{name}/{version}/batch, on Storage queues.

A batch's records are stored in Blob storage in chunks of BATCH_CHUNK_ROWS. Its parallelCount
is its number of lanes: each lane is one message on the batch queue, whose handler (on any
instance: Azure scales them by the queue's length) scores the lane's chunks in turn (lane j
takes chunks j, j+P, j+2P...) through the service's warm worker, a record at a time. So at most
parallelCount records are scored at once.

A chunk is committed by a Table row written after its results blob. A lane handed out again
(its instance died, or it failed) skips committed chunks; a chunk scored twice keeps the
results written first. A lane that keeps failing lands in the poison queue, whose handler ends
the chunk it stopped at as Failed records carrying the error, and sends the lane on."""
from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import consume, ids, services
from .sandbox import pool
from .auth import Principal
from .config import get_settings
from .errors import (ApiError, BadRequest, Conflict, IntegrityFailed, NotFound, PayloadTooLarge, ServiceBusy,
                     Unavailable)
from .http import parse_large_json
from .storage import blobs, queues
from .storage.entities import Entities

log = logging.getLogger("o16n.batch")

_batches = Entities("batches", what="batch")  # partition: the service; row: the batch id
_chunks = Entities("batchchunks", what="batch progress")  # partition: the batch id; row: the chunk
_COMMITTED, _ERROR = "c-", "e-"  # row keys of committed chunks and of a chunk's last error
#: blob reads and writes of one request at once (a batch of 100,000 records is 1,000 chunks)
_IO_THREADS = 8
#: how many times a record is sent again when its worker is ended under it (from outside, as
#: far as the host can tell: code that ends its own worker runs twice)
_DEATHS = 1
_DIGITS = re.compile(r"[0-9]{1,9}")  # ASCII: str.isdigit takes '²', which int() refuses
#: a lane's turn: past it, after the record being scored (at most EXECUTION_TIMEOUT_SECONDS,
#: 200 s), the lane keeps what its chunk scored so far and goes to the back of the queue. A
#: record waits for a busy worker for _WAIT_SECONDS more at most. So no invocation outlives
#: host.json's functionTimeout (10 min), and other batches get turns.
_LANE_SECONDS = 30
_WAIT_SECONDS = 60
#: how often a lane looks whether its batch was cancelled, within a chunk
_CANCEL_SECONDS = 2
#: a record's result as a batch keeps it (a chunk holds BATCH_CHUNK_ROWS of them)
_MAX_RESULT_BYTES = 1024 * 1024


# --- the API ----------------------------------------------------------------------------------
def start(user: Principal, name: str, version: str, raw: bytes, parallel_count: str | None) -> dict:
    """Stores the records and schedules the lanes. :raises NotFound: :raises BadRequest:
    :raises PayloadTooLarge:"""
    s = get_settings()
    svc = _visible_service(user, name, version)
    lanes = _parallel_count(parallel_count)
    if len(raw) > s.batch_max_bytes:
        raise PayloadTooLarge(f"a batch's body may hold at most {s.batch_max_bytes} bytes (BATCH_MAX_BYTES); "
                              "split the records over several batches")
    records = parse_large_json(raw)
    if not isinstance(records, list) or not records:
        raise BadRequest("send the batch as a JSON array of input records (objects), at least one")
    if len(records) > s.batch_max_records:
        raise PayloadTooLarge(f"a batch may hold at most {s.batch_max_records} records (BATCH_MAX_RECORDS); "
                              f"this one has {len(records)}")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise BadRequest(f"record {i} must be an object of the service's inputs")
        try:
            consume.checked_inputs(svc, record)
        except BadRequest as exc:
            raise BadRequest(f"record {i}: {exc.message}") from None
    size = s.batch_chunk_rows
    chunks = [records[i:i + size] for i in range(0, len(records), size)]
    batch_id = ids.new_id()
    with ThreadPoolExecutor(_IO_THREADS) as io:
        list(io.map(lambda c: blobs.put(_records_blob(batch_id, c), _dump(chunks[c])), range(len(chunks))))
    lanes = min(lanes, len(chunks))
    row = _batches.create(_partition(svc), batch_id, {
        "owner": user.name, "ownerRole": user.role, "total": len(records), "chunkRows": size, "lanes": lanes,
        "created": ids.now(), "serviceCreated": svc.get("creationTime", "")})
    try:
        for lane in range(lanes):
            queues.send(s.queue_name, _lane_message(row, lane))
    except ApiError:
        _discard(row)  # nothing half-scheduled: the caller sends it again
        raise
    return {"batchExecutionId": batch_id, "BatchExecutionId": batch_id}  # the SDK reads the second


def list_ids(user: Principal, name: str, version: str) -> list[str]:
    partition = _partition_of(name, version)
    rows = sorted(_batches.list(partition), key=lambda r: r.get("created", ""))
    return [r["RowKey"] for r in rows if _may_see(user, r)]


def status(user: Principal, name: str, version: str, batch_id: str, partial: bool) -> dict:
    row = _mine(user, name, version, batch_id)
    committed, _ = _progress(row)
    total, chunks = int(row["total"]), _chunk_count(row)
    done = sum(int(c["rows"]) for c in committed.values())
    finished = len(committed) == chunks
    if finished:
        state = "Failed" if any(c.get("failed") for c in committed.values()) else "Complete"
    else:
        state = "InProgress" if committed else "Pending"
    results: list[dict] = []
    if partial or finished:
        prefix = 0  # results in input order: the chunks committed before the first that is not
        while prefix < chunks and prefix in committed:
            prefix += 1
        with ThreadPoolExecutor(_IO_THREADS) as io:
            for part in io.map(lambda c: _results(row, c)["results"], range(prefix)):
                results.extend(part)
    return {"state": state, "completedItemCount": done, "totalItemCount": total, "batchExecutionResults": results}


def cancel(user: Principal, name: str, version: str, batch_id: str) -> list[str]:
    """Stops the lanes (each looks for its batch before every chunk) and deletes everything."""
    _discard(_mine(user, name, version, batch_id))
    return [batch_id]


def files(user: Principal, name: str, version: str, batch_id: str, index: str) -> list[str]:
    result = _record_result(_mine(user, name, version, batch_id), index)
    return [f for f, content in (result.get("outputFiles") or {}).items() if content is not None]


def file(user: Principal, name: str, version: str, batch_id: str, index: str, file_name: str) -> bytes:
    result = _record_result(_mine(user, name, version, batch_id), index)
    content = (result.get("outputFiles") or {}).get(file_name)
    if content is None:
        raise NotFound(f"record {index} has no file '{file_name[:128]}'")
    return base64.b64decode(content)


# --- the queue's handlers -----------------------------------------------------------------
def run_lane(body: bytes) -> None:
    """Scores the lane's chunks not yet committed (`body`: the message as the trigger hands it).
    :raises Exception: the host hands the lane out again later (and, after maxDequeueCount
    tries, to `end_lane`)"""
    message, row = _lane_batch(body)
    if row is None:
        return
    committed, _ = _progress(row)
    owner = Principal(row["owner"], row.get("ownerRole") or "Contributor")
    turn_ends = time.monotonic() + _LANE_SECONDS
    for c in range(int(message["lane"]), _chunk_count(row), int(row["lanes"])):
        if c in committed:
            continue
        if _current(row) is None:
            return  # cancelled
        try:
            _score_chunk(row, owner, c, turn_ends)
        except _TurnOver:
            # The rest in another invocation: none outlives host.json's functionTimeout, and the
            # lane goes to the back of the queue, where any instance may take it (others' too).
            queues.send(get_settings().queue_name, message)
            return
        except Exception as exc:
            _note_error(row, c, exc)
            raise


class _TurnOver(Exception):
    """The lane's turn ended: what the chunk scored so far is kept for the next one."""


def end_lane(body: bytes) -> None:
    """A lane that failed every try: the chunk it stopped at ends as Failed records carrying
    its error, and the lane goes on with its next chunks."""
    message, row = _lane_batch(body)
    if row is None:
        return
    committed, errors = _progress(row)
    lane = int(message["lane"])
    stuck = next((c for c in range(lane, _chunk_count(row), int(row["lanes"])) if c not in committed), None)
    if stuck is None:
        return
    error = errors.get(stuck, "it stopped the instance scoring it")
    svc = _service_of(row)
    failure = consume.failed(svc, f"this record's chunk could not be scored after every try: {error}")
    _commit(row, stuck, [failure] * _rows_in(row, stuck), failed=True)
    queues.send(get_settings().queue_name, _lane_message(row, lane))


# --- inside ----------------------------------------------------------------------------------
def _score_chunk(row: dict, owner: Principal, c: int, turn_ends: float) -> None:
    """:raises _TurnOver: past `turn_ends`, with at least one record scored"""
    svc = _service_of(row)
    if svc is None:
        gone = consume.failed(None, f"service '{row['PartitionKey']}' was deleted before this record was scored")
        _commit(row, c, [gone] * _rows_in(row, c), failed=True)
        return
    try:
        records = json.loads(blobs.get(_records_blob(row["RowKey"], c)))
    except NotFound:
        if _current(row) is None:
            return  # cancelled meanwhile
        raise
    except ValueError:
        records = None
    if not isinstance(records, list) or len(records) != _rows_in(row, c):
        raise IntegrityFailed("the stored records of this chunk could not be read")
    results = _scored_so_far(row, c)
    first, looked = len(results), time.monotonic()
    for record in records[first:]:
        if len(results) > first and time.monotonic() > turn_ends:
            blobs.put(_partial_blob(row["RowKey"], c, len(results)), _dump(results))
            raise _TurnOver()
        if time.monotonic() - looked > _CANCEL_SECONDS:
            if _current(row) is None:
                return  # cancelled: the rest of the chunk is not scored
            looked = time.monotonic()
        results.append(_score(owner, svc, record, turn_ends + _WAIT_SECONDS))
    _commit(row, c, results, failed=False, resumed=first > 0)  # no listing for chunks scored in one turn


def _scored_so_far(row: dict, c: int) -> list[dict]:
    """What earlier turns of the lane scored of chunk `c`: the longest part kept."""
    parts = blobs.names(_partial_blob(row["RowKey"], c, None))
    if not parts:
        return []
    return json.loads(blobs.get(max(parts)))


def _score(owner: Principal, svc: dict, record: dict, until: float) -> dict:
    """One record's WebServiceResult, with the service's other callers first: on an instance,
    batch records take as many of its workers at once as it may have, and only a worker no
    call is using. :raises Unavailable: storage, or a worker that stayed busy past `until`: the
    chunk is tried again later"""
    key = (svc["PartitionKey"], svc["RowKey"])
    with _slots_of(key):
        while True:
            if not pool.services.all_busy(key, svc.get("etag")):
                try:
                    return _capped(svc, consume.consume(owner, key[0], key[1], record, deaths=_DEATHS))
                except ServiceBusy:
                    pass
                except Unavailable:
                    raise
                except ApiError as exc:  # this record's own problem (its inputs, the service gone meanwhile)
                    return consume.failed(svc, exc.message)
            if time.monotonic() > until:
                raise ServiceBusy("the service stayed busy with other calls", retry_after=5)
            time.sleep(0.02)


def _slots_of(key: tuple[str, str]) -> threading.Semaphore:
    with _slots_lock:
        slots = _slots.get(key)
        if slots is None:
            slots = _slots[key] = threading.Semaphore(get_settings().max_workers_per_service)
        return slots


_slots: dict[tuple[str, str], threading.Semaphore] = {}
_slots_lock = threading.Lock()


def _capped(svc: dict, result: dict) -> dict:
    """A record's result as stored: a result past _MAX_RESULT_BYTES would make every read of its
    chunk (status, files) that large."""
    size = len(_dump(result))
    if size <= _MAX_RESULT_BYTES:
        return result
    return consume.failed(svc, f"the record's result is {size} bytes; a batch keeps at most {_MAX_RESULT_BYTES} "
                               "per record (consume it on its own)")


def _commit(row: dict, c: int, results: list[dict], *, failed: bool, resumed: bool = False) -> None:
    """Results first, then the row that counts them: what a reader counts is always there."""
    batch_id = row["RowKey"]
    try:
        blobs.put(_results_blob(batch_id, c), _dump({"failed": failed, "results": results}))
    except Conflict:
        failed = bool(_results(row, c).get("failed"))  # scored before, its commit lost: the first stands
    try:
        _chunks.create(batch_id, f"{_COMMITTED}{c:06d}", {"rows": len(results), "failed": failed, "by": _INSTANCE})
    except Conflict:
        pass  # committed by another try of this lane
    if _current(row) is None:  # cancelled while this chunk was scored: what it wrote goes too
        _discard(row)
        return
    if resumed:
        for part in blobs.names(_partial_blob(batch_id, c, None)):
            blobs.delete(part)  # what earlier turns kept of it: in the results now


def _note_error(row: dict, c: int, exc: Exception) -> None:
    if isinstance(exc, ApiError):
        text = exc.message
    else:
        log.exception("batch %s: chunk %d failed", row["RowKey"], c)
        text = "an internal error"
    key = f"{_ERROR}{c:06d}"
    try:
        try:
            _chunks.replace({**_chunks.get(row["RowKey"], key), "error": text[:1000]})
        except NotFound:
            _chunks.create(row["RowKey"], key, {"error": text[:1000]})
    except ApiError:
        log.warning("batch %s: the error of chunk %d could not be kept", row["RowKey"], c)


def _progress(row: dict) -> tuple[dict[int, dict], dict[int, str]]:
    """The committed chunks, and the last error of each chunk that failed a try."""
    committed, errors = {}, {}
    for r in _chunks.list(row["RowKey"]):
        key = r["RowKey"]
        if key.startswith(_COMMITTED):
            committed[int(key[len(_COMMITTED):])] = r
        elif key.startswith(_ERROR):
            errors[int(key[len(_ERROR):])] = r.get("error", "")
    return committed, errors


def _discard(row: dict) -> None:
    """The batch row first (its lanes stop at their next chunk), then what it points at."""
    _batches.delete(row)  # never changed after it is made: its ETag holds
    for r in _chunks.list(row["RowKey"]):
        _chunks.delete(r)
    prefix = f"batches/{row['RowKey']}/"
    with ThreadPoolExecutor(_IO_THREADS) as io:
        list(io.map(blobs.delete, blobs.names(prefix)))


def _lane_batch(body: bytes) -> tuple[dict, dict | None]:
    """The lane's message and its batch; None when the batch is gone (cancelled) or the message
    is not one of ours."""
    try:
        message = json.loads(body)
        batch_id, name, version = (ids.existing_id(message["batch"], "batch"), message["name"],
                                   message["version"])
        int(message["lane"])
        return message, _batches.get(_partition_of(name, version), batch_id)
    except (KeyError, TypeError, ValueError, NotFound, BadRequest):
        log.warning("a batch message named no batch there is: dropped")
        return {}, None


def _lane_message(row: dict, lane: int) -> dict:
    name, _, version = row["PartitionKey"].partition(":")
    return {"batch": row["RowKey"], "name": name, "version": version, "lane": lane}


def _current(row: dict) -> dict | None:
    try:
        return _batches.get(row["PartitionKey"], row["RowKey"])
    except NotFound:
        return None


def _service_of(row: dict) -> dict | None:
    """The service the batch was started on; None when it was deleted (or deleted and
    published again: another service under the same name and version)."""
    name, _, version = row["PartitionKey"].partition(":")
    try:
        svc = services.cached(name, version)
    except NotFound:
        return None
    return svc if svc.get("creationTime", "") == row.get("serviceCreated", "") else None


def _visible_service(user: Principal, name: str, version: str) -> dict:
    svc = services.cached(ids.service_name(name), ids.service_name(version, "version"))
    if not services.visible(user, svc):
        raise NotFound(f"service '{name[:128]}' version '{version[:128]}' not found")
    return svc


def _mine(user: Principal, name: str, version: str, batch_id: str) -> dict:
    """The batch, for the caller who started it and for Owners; anyone else: 404."""
    bid = ids.existing_id(batch_id, "batch execution")
    try:
        row = _batches.get(_partition_of(name, version), bid)
    except NotFound:
        row = None
    if row is None or not _may_see(user, row):
        raise NotFound(f"batch execution '{batch_id[:64]}' not found")
    return row


def _may_see(user: Principal, row: dict) -> bool:
    return row.get("owner") == user.name or user.owner


def _record_result(row: dict, index: str) -> dict:
    """The WebServiceResult of record `index` (0-based, as the SDK's results are)."""
    i = int(index) if _DIGITS.fullmatch(index) else -1
    if not 0 <= i < int(row["total"]):
        raise NotFound(f"record '{index[:32]}' not found: the batch's records are 0 to {int(row['total']) - 1}")
    c = i // int(row["chunkRows"])
    try:
        stored = _results(row, c)
    except NotFound:
        raise NotFound(f"record {i} has not been scored yet") from None
    return stored["results"][i - c * int(row["chunkRows"])]


def _results(row: dict, c: int) -> dict:
    return json.loads(blobs.get(_results_blob(row["RowKey"], c)))


def _parallel_count(raw: str | None) -> int:
    limit = get_settings().batch_max_parallel
    if raw is None or raw == "":
        return min(10, limit)  # ML Server's default
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= limit:
        raise BadRequest(f"parallelCount must be a whole number from 1 to {limit} (BATCH_MAX_PARALLEL)")
    return int(raw)


def _partition(svc: dict) -> str:
    return f"{svc['PartitionKey']}:{svc['RowKey']}"


def _partition_of(name: str, version: str) -> str:
    return f"{ids.service_name(name)}:{ids.service_name(version, 'version')}"


def _chunk_count(row: dict) -> int:
    return math.ceil(int(row["total"]) / int(row["chunkRows"]))


def _rows_in(row: dict, c: int) -> int:
    size = int(row["chunkRows"])
    return min(size, int(row["total"]) - c * size)


def _records_blob(batch_id: str, c: int) -> str:
    return f"batches/{batch_id}/records/{c:06d}.json"


def _partial_blob(batch_id: str, c: int, scored: int | None) -> str:
    """What a lane's turn scored of chunk `c` (`scored` None: the prefix of all of them)."""
    prefix = f"batches/{batch_id}/partial/{c:06d}-"
    return prefix if scored is None else f"{prefix}{scored:06d}.json"


def _results_blob(batch_id: str, c: int) -> str:
    return f"batches/{batch_id}/results/{c:06d}.json"


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


#: who committed a chunk (Azure names each instance; locally, the process)
_INSTANCE = os.environ.get("WEBSITE_INSTANCE_ID") or f"{socket.gethostname()}:{os.getpid()}"
