"""Web services: publish, patch, list, delete. A service keeps its own sealed copy of the
snapshot it was published from, so deleting the snapshot never breaks it."""
from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import Any

from . import idempotency, ids, models, realtime, snapshots, types, workspaces
from .auth import Principal
from .config import get_settings
from .errors import (ApiError, BadRequest, Conflict, Forbidden, KeyReused, NeedsStorage, NotFound, PreconditionFailed,
                     StorageUnavailable)
from .sandbox import pool
from .storage.entities import Entities

_rows = Entities("services", what="service")
# Who may publish under a name: one row per name (lower case, so 'az' cannot shadow 'Az').
_names = Entities("servicenames", what="service name")
_NAMES = "names"
# What a Table property of JSON can hold (64 KiB): declared lists always fit (at most
# ids.MAX_PARAMETERS or ids.MAX_OUTPUT_FILES names of at most 128 ASCII characters)
_MAX_JSON_UNITS = 30000
_LISTS = ("inputParameterDefinitions", "outputParameterDefinitions", "outputFileNames")


def binding(name: str, version: str) -> str:
    return f"service:{name}:{version}"


def publish(user: Principal, name: str, version: str | None, body: dict, key_header: str | None = None) -> str:
    _writer(user)
    key = idempotency.key(key_header, user.name, "publish", {"name": name, "version": version, "body": body})
    name, version, dev = _named(name, version, key)
    if _made_by(key, name, version):
        return version
    code = _code(body.get("code"))
    values = {"runtimeType": ids.runtime(body), "code": code, "versionPublishedBy": user.name,
              "creationTime": ids.now(), "snapshotId": "", "devVersion": dev, "codeBy": _code_by({}, user)}
    values.update(_fields(body))
    co_publishers = _co_publishers(body)
    snapshot_id = ids.optional_str(body, "snapshotId")
    data = snapshots.content(user, snapshot_id) if snapshot_id else None
    return _create(user, name, version, dev, values, data, snapshot_id or "", co_publishers, key)


def publish_realtime(user: Principal, name: str, version: str | None, form: dict[str, str], model: bytes,
                     key_header: str | None = None) -> str:
    """A realtime service: an ONNX model (or a scikit-learn one converted in the sandbox)."""
    _writer(user)
    key = idempotency.key(key_header, user.name, "publish-realtime",
                          {"name": name, "version": version, "form": form, "model": model})
    name, version, dev = _named(name, version, key)
    if _made_by(key, name, version):
        return version
    values = {"runtimeType": "Realtime", "code": "", "versionPublishedBy": user.name, "creationTime": ids.now(),
              "snapshotId": "", "devVersion": dev, "codeBy": _code_by({}, user)}
    values.update(_fields(_realtime_form(form)), **_REALTIME_IO)
    _may_publish(user, name)  # before the costly check of the model; checked again when claimed
    data, info = realtime.prepare(user.name, model)
    values["realtimeModel"] = realtime.definition(info)
    return _create(user, name, version, dev, values, data, "", None, key)


def _code_by(row: dict, user: Principal) -> str:
    """Everyone whose code or workspace a version runs (its publisher, and whoever changed them
    since): its workers share a template only with workers of exactly these people."""
    return json.dumps(sorted(set(json.loads(code_by(row))) | {user.name}))


def code_by(row: dict) -> str:
    return row.get("codeBy") or json.dumps([row.get("versionPublishedBy", "")] if row else [])


def _named(name: str, version: str | None, key: idempotency.Key | None) -> tuple[str, str, bool]:
    """The checked name and version; without a version the service is a development version
    with a GUID (the same for a retry with the same Idempotency-Key), seen only by its author."""
    name = ids.service_name(name)
    if version:
        return name, ids.service_name(version, "version"), False
    return name, key.id() if key else ids.new_id(), True


def _made_by(key: idempotency.Key | None, name: str, version: str) -> bool:
    """Whether an earlier attempt with this Idempotency-Key published this version.
    :raises KeyReused: it did, for another request."""
    if key is None:
        return False
    try:
        return key.made(_rows.get(name, version))
    except NotFound:
        return False


def _create(user: Principal, name: str, version: str, dev: bool, values: dict[str, Any], data: bytes | None,
            snapshot_id: str, co_publishers: list[str] | None, key: idempotency.Key | None) -> str:
    # Claimed after every check, and given back if the publish fails below. A development
    # version claims nothing (only its author sees and calls it), but obeys a name's holder.
    if dev and co_publishers is not None:
        raise BadRequest("'coPublishers' applies to a service name: publish a named version to set it")
    claim, claimed = _check_name(user, name, create=not dev)
    before = claim
    stored: dict[str, Any] = {}
    try:
        if co_publishers is not None:
            claim = _set_co_publishers(user, name, claim, co_publishers)
        if data is not None:
            stored = workspaces.store(f"services/{name}/{version}", binding(name, version), data,
                                      key.blob_id(data) if key else None)
            values.update(stored, snapshotId=snapshot_id)
        if key:
            values.update(key.fields())
        try:
            created = _rows.create(name, version, values)
        except Conflict:
            if not _made_by(key, name, version):
                raise
            created = _rows.get(name, version)  # a concurrent attempt with the same key committed first
        if claim is not None and get_settings().service_names == "owned":
            _still_allowed(user, name, created)
        if key:
            workspaces.sweep(key.blobs_under(f"services/{name}/{version}"), created)
    except Exception as exc:
        if key is None:
            workspaces.abandon(exc, stored)
        elif isinstance(exc, KeyReused):  # the key's version is committed: nothing else of it is kept
            workspaces.sweep(key.blobs_under(f"services/{name}/{version}"), _rows.get(name, version))
        # else: another attempt with this key may still commit the same blob; the one that does sweeps
        if not isinstance(exc, StorageUnavailable):  # else the version may be written
            if claimed:
                _give_back(claim, name)
            elif claim is not before:
                _restore(before, claim)
        if isinstance(exc, Conflict):
            raise Conflict(f"service '{name}' version '{version}' already exists; use PATCH to change it") from None
        raise
    return version


def patch(user: Principal, name: str, version: str, body: dict, if_match: str | None = None) -> tuple[str, str]:
    """The version and its new ETag. :raises PreconditionFailed: `if_match` names another state
    (checked once the request is known to be valid, as RFC 9110 13.2.1 orders it)."""
    row = _own(user, name, version)
    name, version = row["PartitionKey"], row["RowKey"]
    if row.get("runtimeType") == "Realtime":
        raise Conflict(f"service '{name}' version '{version}' is a realtime service: change it with "
                       f"PATCH /realtime-services/{name}/{version}")
    co_publishers = _co_publishers(body)
    if co_publishers is not None and row.get("devVersion"):
        raise Conflict("'coPublishers' applies to a service name: set it on a named version")
    old = dict(row)
    row.update(_fields(body, partial=True))
    if any(body.get(k) is not None for k in ("code", "initCode", "snapshotId")):
        row["codeBy"] = _code_by(row, user)
    if body.get("code") is not None:
        row["code"] = _code(body["code"])
    if body.get("runtimeType") is not None:
        ids.runtime(body)
    stored: dict[str, Any] = {}
    snapshot_id = ids.optional_str(body, "snapshotId", max_length=64)
    data = snapshots.content(user, snapshot_id) if snapshot_id else None
    # Everything is checked: now the precondition (RFC 9110 13.2.1), then the writes.
    _check_if_match(old, if_match)
    claim = changed = None
    if co_publishers is not None:
        claim = _check_name(user, name)[0]
        changed = _set_co_publishers(user, name, claim, co_publishers)
    try:
        if data is not None:
            stored = workspaces.store(f"services/{name}/{version}", binding(name, version), data)
            row.update(stored, snapshotId=snapshot_id)
        elif snapshot_id == "":  # sent empty: the service no longer has a workspace
            row.update(stateBlob="", stateSha256="", stateMac="", snapshotId="")
        return _replace(row, old, stored, if_match)
    except ApiError as exc:
        if changed is not None and not isinstance(exc, StorageUnavailable):
            _restore(claim, changed)
        raise


def patch_realtime(user: Principal, name: str, version: str, form: dict[str, str], model: bytes | None,
                   if_match: str | None = None) -> tuple[str, str]:
    row = _own(user, name, version)
    name, version = row["PartitionKey"], row["RowKey"]
    if row.get("runtimeType") != "Realtime":
        raise Conflict(f"service '{name}' version '{version}' is a standard Python service: change it with "
                       f"PATCH /services/{name}/{version}")
    old = dict(row)
    row.update(_fields(_realtime_form(form), partial=True))
    stored: dict[str, Any] = {}
    if model is not None:
        data, info = realtime.prepare(user.name, model)
        row.update(realtimeModel=realtime.definition(info), codeBy=_code_by(row, user))
    _check_if_match(old, if_match)
    if model is not None:
        stored = workspaces.store(f"services/{name}/{version}", binding(name, version), data)
        row.update(stored)
    return _replace(row, old, stored, if_match)


def _replace(row: dict, old: dict, stored: dict[str, Any], if_match: str | None) -> tuple[str, str]:
    """Write the changed version; its old stored copy goes once nothing points at it."""
    try:
        written = _rows.replace(row)
    except (PreconditionFailed, NotFound) as exc:
        workspaces.discard(stored)  # not kept: deleted or changed meanwhile
        if isinstance(exc, NotFound):
            raise NotFound(f"service '{row['PartitionKey']}' version '{row['RowKey']}' was deleted meanwhile") from None
        raise _changed_meanwhile(if_match) from None
    if old.get("stateBlob") != row.get("stateBlob"):
        workspaces.discard(old)
    forget(row["PartitionKey"], row["RowKey"])
    return row["RowKey"], etag(written)


def etag(row: dict) -> str:
    """The version's entity tag (RFC 9110, strong): it changes with every write of the version."""
    return '"' + hashlib.sha256(str(row["etag"]).encode()).hexdigest()[:32] + '"'


def _check_if_match(row: dict, if_match: str | None) -> None:
    """:raises PreconditionFailed: the caller's If-Match names none of the version's current state."""
    if if_match is None or if_match.strip() == "*":
        return
    tags = [t.strip() for t in if_match.split(",")]
    if etag(row) not in tags:  # strong comparison: a weak W/"..." tag never matches (RFC 9110 13.1.1)
        raise PreconditionFailed(f"service '{row['PartitionKey']}' version '{row['RowKey']}' changed since the "
                                 "ETag in If-Match: GET it again, then retry with its new ETag")


def _changed_meanwhile(if_match: str | None) -> Exception:
    if if_match is not None:
        return PreconditionFailed("the service was changed by another request at the same time: GET it again, "
                                  "then retry with its new ETag")
    return Conflict("the service was changed by another request at the same time; try again")


_REALTIME_IO = {"inputParameterDefinitions": json.dumps([{"name": realtime.INPUT, "type": "data.frame"}]),
                "outputParameterDefinitions": json.dumps([{"name": realtime.OUTPUT, "type": "data.frame"}]),
                "outputFileNames": "[]", "initCode": ""}


def _realtime_form(form: dict[str, str]) -> dict[str, str]:
    """description and operationId: a realtime service has nothing else to set."""
    extra = sorted(set(form) - {"description", "operationId"})
    if extra:
        raise BadRequest(f"the form field '{extra[0][:64]}' does not apply to a realtime service (it takes the "
                         "file 'model' and the fields 'description' and 'operationId')")
    return {k: form[k] for k in ("description", "operationId") if k in form}


def delete(user: Principal, name: str, version: str, if_match: str | None = None) -> str:
    row = _own(user, name, version)
    _check_if_match(row, if_match)
    try:
        _rows.delete(row)
    except PreconditionFailed:
        raise _changed_meanwhile(if_match) from None
    forget(name, version)
    workspaces.discard(row)
    return "Success"


def get(name: str, version: str, user: Principal | None = None) -> dict:
    """:raises NotFound: also for someone else's development version when `user` is given."""
    try:
        row = _rows.get(ids.service_name(name), ids.service_name(version, "version"))
    except (NotFound, BadRequest):
        row = None
    if row is None or (user is not None and not visible(user, row)):
        raise NotFound(f"service '{name[:128]}' version '{version[:128]}' not found")
    return row


def visible(user: Principal, row: dict) -> bool:
    return not row.get("devVersion") or row.get("versionPublishedBy") == user.name


def list_all(user: Principal, name: str | None = None) -> list[dict]:
    if name is not None:
        ids.service_name(name)
    rows = sorted(_rows.list(name), key=lambda r: (r["PartitionKey"], r.get("creationTime", "")))
    claims = {c["RowKey"]: c for c in _names.list(_NAMES)} if rows else {}
    return [view(user, r, claims.get(r["PartitionKey"].lower())) for r in rows if visible(user, r)]


def describe(user: Principal, name: str, version: str) -> tuple[list[dict], str]:
    """The version (as ML Server answers it, in a list) and its ETag."""
    row = get(name, version, user)
    return [view(user, row, _claim(row["PartitionKey"]))], etag(row)


def view(user: Principal, row: dict, claim: dict | None = None) -> dict:
    """The WebService model, every field present. Code and initCode (which may hold keys) are
    shown only to the version's publisher, the name's holder and Owners."""
    holder = bool(claim and claim["owner"] == user.name and get_settings().service_names == "owned")
    mine = row.get("versionPublishedBy") == user.name or user.owner or holder
    out = {"name": row["PartitionKey"], "version": row["RowKey"],
           "versionPublishedBy": row.get("versionPublishedBy", ""), "creationTime": row.get("creationTime", ""),
           "snapshotId": row.get("snapshotId", ""), "runtimeType": row.get("runtimeType", "Python"),
           "initCode": row.get("initCode", "") if mine else "", "code": row.get("code", "") if mine else "",
           "coPublishers": _listed(claim) if claim else [],
           "description": row.get("description", ""), "operationId": row.get("operationId") or "consume",
           "myPermissionOnService": "read/write" if mine and not user.reader else "read only"}
    for key in _LISTS:
        out[key] = json.loads(row.get(key) or "[]")
    return models.complete("WebService", out)


def _writer(user: Principal) -> None:
    if user.reader:
        raise Forbidden("the Reader role may list and consume services, not publish, change or delete them")


def _own(user: Principal, name: str, version: str) -> dict:
    """The version, when the caller may change it: an Owner, the name's holder, or its publisher
    while the name still lets them publish (a co-publisher removed keeps no rights)."""
    _writer(user)
    row = get(name, version, user)
    if user.owner:
        return row
    owned = get_settings().service_names == "owned" and not row.get("devVersion")
    claim = _claim(row["PartitionKey"]) if owned else None
    if claim is not None and claim["owner"] == user.name:
        return row
    if row.get("versionPublishedBy") == user.name:
        if claim is None or user.name in _listed(claim):
            return row
        raise Forbidden(f"the service name '{row['PartitionKey']}' is held by {claim['owner']}, who no longer lists "
                        "you as a co-publisher: only they and Owners may change its versions")
    raise Forbidden(f"service '{name}' version '{version}' is owned by another user; only its owner can change it")


def _may_publish(user: Principal, name: str) -> None:
    """:raises Forbidden: the name is someone else's (read only: nothing is claimed here)"""
    claim = _claim(name)
    if claim is not None and get_settings().service_names == "owned" and not _publishes_under(user, claim):
        raise _not_yours(claim, name)


def _publishes_under(user: Principal, claim: dict) -> bool:
    return user.owner or claim["owner"] == user.name or user.name in _listed(claim)


def _not_yours(claim: dict, name: str) -> Forbidden:
    return Forbidden(f"the service name '{claim.get('name') or name}' belongs to {claim['owner']}: only they, the "
                     "co-publishers they name (coPublishers) and Owners may publish versions under it")


def _claim(name: str) -> dict | None:
    try:
        return _names.get(_NAMES, name.lower())
    except NotFound:
        return None


def _check_name(user: Principal, name: str, *, create: bool = True) -> tuple[dict | None, bool]:
    """The name's claim, and whether this call made it (for a name nobody held, when `create`).
    Names are claimed also under SERVICE_NAMES=shared (nothing is enforced then), so switching
    to owned later finds every name held.
    :raises Forbidden: the name is someone else's (SERVICE_NAMES=owned).
    :raises Conflict: the name is held under another spelling."""
    _claim_existing_names_once()
    claim, claimed = _claim(name), False
    if claim is None and not create:
        return None, False
    if claim is None:
        try:
            claim, claimed = _names.create(_NAMES, name.lower(),
                                           {"owner": user.name, "coPublishers": "[]", "name": name}), True
        except Conflict:
            claim = _names.get(_NAMES, name.lower())
    if get_settings().service_names == "shared":
        return claim, claimed
    spelled = claim.get("name") or name
    if not _publishes_under(user, claim):
        raise _not_yours(claim, name)
    if spelled != name:
        # One spelling per name, so every version of a name is found under one partition.
        raise Conflict(f"this service name is spelled '{spelled}': publish its versions under that spelling")
    return claim, claimed


_MIGRATED = "claims-made"  # the marker row: every name published before claims existed is claimed
_migrated = threading.Event()


def _claim_existing_names_once() -> None:
    """Names with versions but no claim (published before claims existed) go to the first
    publisher of a named version under any spelling, with that spelling. Done once per storage
    account (a marker row), checked once per process."""
    if _migrated.is_set():
        return
    try:
        _names.get("meta", _MIGRATED)
    except NotFound:
        earliest: dict[str, dict] = {}
        for row in _rows.list():
            if row.get("devVersion"):
                continue
            key = row["PartitionKey"].lower()
            if key not in earliest or row.get("creationTime", "") < earliest[key].get("creationTime", ""):
                earliest[key] = row
        for key, row in earliest.items():
            try:
                _names.create(_NAMES, key, {"owner": row.get("versionPublishedBy", ""), "coPublishers": "[]",
                                            "name": row["PartitionKey"]})
            except Conflict:
                pass  # claimed since, or by another instance doing the same
        try:
            _names.create("meta", _MIGRATED, {})
        except Conflict:
            pass
    _migrated.set()


def _still_allowed(user: Principal, name: str, created: dict) -> None:
    """Checked again once the version is written: a co-publisher removed while his publish was
    uploading must not end up with a version under the name."""
    claim = _claim(name)
    if user.owner or (claim is not None and _publishes_under(user, claim)):
        return
    try:
        _rows.delete(created)
    except (NotFound, PreconditionFailed):
        pass
    holder = claim["owner"] if claim else "someone else"
    raise Forbidden(f"the service name '{name}' is held by {holder}, who no longer lists you as a co-publisher")


def _set_co_publishers(user: Principal, name: str, claim: dict | None, names: list[str]) -> dict:
    if claim is None or get_settings().service_names == "shared":
        raise BadRequest("'coPublishers' needs SERVICE_NAMES=owned: every Contributor may publish under any name")
    if claim["owner"] != user.name and not user.owner:
        raise Forbidden(f"only {claim['owner']}, who holds the service name '{name}', or an Owner may change "
                        "its co-publishers")
    try:
        # not escaped: 50 names of 256 characters of any kind fit a Table property (64 KiB)
        return _names.replace({**claim, "coPublishers": json.dumps(names, ensure_ascii=False)})
    except PreconditionFailed:
        raise Conflict("the service name was changed by another request at the same time; try again") from None


def _give_back(claim: dict | None, name: str) -> None:
    """Undo a claim this request made, unless something changed it since or a version exists
    under the name (a concurrent publish of the same name that relied on this claim: without
    it, anyone could take the name and its versions). A claim is otherwise kept, also when every
    version is deleted: releasing it races with a publish in flight."""
    if claim is None or any(True for _ in _rows.list(name)):  # versions are kept under the name as spelled
        return
    try:
        _names.delete(claim)
    except (NotFound, PreconditionFailed):
        pass


def _restore(before: dict, after: dict) -> None:
    """Put back the co-publishers a failed request changed (unless changed again since)."""
    try:
        _names.replace({**after, "coPublishers": before.get("coPublishers", "[]")})
    except ApiError:
        pass


def _co_publishers(body: dict) -> list[str] | None:
    value = body.get("coPublishers")
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) > ids.MAX_CO_PUBLISHERS
            or not all(isinstance(v, str) and 0 < len(v) <= ids.USER_NAME_MAX for v in value)):
        raise BadRequest(f"'coPublishers' must be a list of at most {ids.MAX_CO_PUBLISHERS} user names")
    return sorted(set(value))


def _listed(claim: dict) -> list[str]:
    try:
        names = json.loads(claim.get("coPublishers") or "[]")
    except ValueError:
        return []
    return [str(n) for n in names] if isinstance(names, list) else []


def _code(code: object) -> str:
    if not isinstance(code, str) or not ids.not_blank(code):
        raise BadRequest("'code' is required as a non-empty string: the Python code run for each request")
    if len(code) > ids.TEXT_MAX:
        raise BadRequest(f"'code' is longer than {ids.TEXT_MAX} characters; move the bulk of it into the "
                         "snapshot (a function or module in the workspace) and call it from 'code'")
    return code


def _fields(body: dict, *, partial: bool = False) -> dict[str, Any]:
    """The optional PublishWebServiceRequest fields; on PATCH only those sent."""
    out: dict[str, Any] = {}
    # On PATCH, absent or null keeps a field (the SDK sends null for what it did not set);
    # an empty string or list clears it.
    def sent(key: str) -> bool:
        return not partial or body.get(key) is not None

    for key in ("description", "initCode", "operationId"):
        if sent(key):
            value = body.get(key)
            if value is not None and not isinstance(value, str):
                raise BadRequest(f"'{key}' must be a string")
            if value and len(value) > ids.TEXT_MAX:
                raise BadRequest(f"'{key}' is longer than {ids.TEXT_MAX} characters")
            out[key] = value or ""
    if out.get("operationId"):
        ids.identifier(out["operationId"], "the operationId")
    for key in ("inputParameterDefinitions", "outputParameterDefinitions"):
        if sent(key):
            out[key] = json.dumps(types.check_definitions(body.get(key), key))
            if ids.utf16_units(out[key]) > _MAX_JSON_UNITS:
                raise BadRequest(f"'{key}' is too long: at most {_MAX_JSON_UNITS} characters as JSON")
    if sent("outputFileNames"):
        files = body.get("outputFileNames")
        files = [] if files is None else files
        if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
            raise BadRequest("'outputFileNames' must be a list of file names")
        if len(files) > ids.MAX_OUTPUT_FILES:
            raise BadRequest(f"'outputFileNames' is too long: at most {ids.MAX_OUTPUT_FILES} file names")
        for f in files:
            ids.service_name(f, "output file name")
        out["outputFileNames"] = json.dumps(files)
    return out


# --- the definition cache used by consume ---------------------------------------------------
_cache: dict[tuple[str, str], tuple[float, dict]] = {}
_cache_lock = threading.Lock()


def cached(name: str, version: str, *, cached_only: bool = False) -> dict:
    """The service definition, re-read from storage at most once per TTL. :raises NotFound:
    :raises NeedsStorage: with `cached_only`, when it would be read now."""
    key = (name, version)
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
    if hit and now - hit[0] < get_settings().service_cache_ttl_seconds:
        return hit[1]
    if cached_only:
        raise NeedsStorage()
    try:
        row = get(name, version)
    except NotFound:
        forget(name, version)
        raise
    row["_inputs"] = json.loads(row.get("inputParameterDefinitions") or "[]")
    row["_outputs"] = json.loads(row.get("outputParameterDefinitions") or "[]")
    row["_files"] = json.loads(row.get("outputFileNames") or "[]")
    row["_realtime"] = json.loads(row["realtimeModel"]) if row.get("realtimeModel") else None
    with _cache_lock:
        _cache[key] = (now, row)
    return row


def forget(name: str, version: str) -> None:
    with _cache_lock:
        _cache.pop((name, version), None)
    pool.services.retire((name, version), when_idle=True)
