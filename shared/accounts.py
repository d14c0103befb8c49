"""Local accounts as the settings define them now: each holds only a scrypt hash of its password,
and a credential version that every token of the account carries, so a removed account or a
changed password ends its tokens at once.

The version includes an epoch kept in Table storage, raised whenever an instance sees the
account's credential differ from the one last seen, or sees the account gone (every instance
compares them all as it starts serving, and nothing reads an epoch before that is done). So
tokens that were refused once stay refused when old settings come back (a rolled-back password,
a suspended account restored)."""
from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import logging
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

from . import passwords, storage
from .config import Settings, get_settings
from .errors import ApiError, Conflict, NeedsStorage, NotFound, PreconditionFailed, StorageUnavailable, Unavailable
from .storage.entities import Entities

log = logging.getLogger("o16n")


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    #: the scrypt hash of its password (never the password)
    credential: str


_lock = threading.Lock()
_cache: dict[int, tuple[Settings, dict[str, Account]]] = {}


def find(name: str) -> Account | None:
    return _all().get(name)


def check_password(name: str, password: str) -> Account | None:
    """The account when the password is right; one scrypt either way."""
    account = find(name)
    ok = passwords.verify(account.credential if account else _decoy(), password)
    return account if ok and account else None


def credential_version(account: Account, key: str, epoch: int) -> str:
    """A short keyed digest of the account's name, credential and epoch (the key keeps it from
    being a password hash an attacker could test guesses against)."""
    mac = hmac.new(key.encode(), f"cv|{account.name}|{account.credential}|{epoch}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:16]).rstrip(b"=").decode()


def epoch(account: Account, *, cached_only: bool = False) -> int:
    """The account's epoch, read from storage at most once per TOKEN_STATE_TTL_SECONDS.
    :raises NeedsStorage: with `cached_only`, when it would be read now. :raises ApiError:
    storage does not answer (see sweep_once)"""
    now = time.monotonic()
    with _lock:
        hit = _epochs.get(account.name)
    if hit and now - hit[0] < get_settings().token_state_ttl_seconds:
        return hit[1]
    if cached_only:
        raise NeedsStorage()
    sweep_once()
    value = _observe(account.name, _fingerprints(account))
    remember_epoch(account.name, value)
    return value


def remember_epoch(name: str, value: int) -> None:
    with _lock:
        _epochs[name] = (time.monotonic(), value)


def swept() -> bool:
    return _swept.is_set()


def sweep_soon() -> None:
    """sweep_once in the background, so that no request waits for it: at an instance's first
    request of any kind, and again _SWEEP_RETRY_SECONDS after a try that failed. (Whatever reads
    an epoch still waits for it: see `epoch`.)"""
    global _sweep_next
    if _swept.is_set() or time.monotonic() < _sweep_next:
        return  # every request asks: no lock for the answer it nearly always gets
    with _lock:
        if time.monotonic() < _sweep_next:
            return
        _sweep_next = time.monotonic() + _SWEEP_RETRY_SECONDS
    threading.Thread(target=_sweep_in_background, name="o16n-accounts", daemon=True).start()


def _sweep_in_background() -> None:
    try:
        sweep_once()
    except ApiError:
        log.warning("the stored accounts could not be compared with the settings yet")


def sweep_once() -> None:
    """Once per process, compare every stored account with the settings: accounts no longer
    configured are marked removed and changed credentials raise their epoch, so tokens of an
    earlier setting stay refused if it comes back (a rollback, a slot swap). Callers at once
    share one try: when it fails, all of them do.
    :raises ApiError: storage does not answer, or did not let the try under way end within
    STORAGE_TIMEOUT_SECONDS (tried again on a later call)"""
    global _sweep_failure
    if _swept.is_set():
        return
    if storage.request_failed():  # this request waited for storage once already: not twice
        raise StorageUnavailable("storage is not answering; try again shortly")
    asked = time.monotonic()
    if not _sweep_lock.acquire(timeout=get_settings().storage_timeout_seconds):
        raise StorageUnavailable("storage is slow to answer; try again shortly")
    try:
        if _swept.is_set():
            return
        if _sweep_failure is not None and _sweep_failure[0] > asked:
            raise copy.copy(_sweep_failure[1])  # the try this call waited for failed: no second wait
        try:
            accounts = _all()
            for row in _rows.list("accounts"):
                name = row.get("name")
                if name in accounts:
                    remember_epoch(name, _observe(name, _fingerprints(accounts[name])))
                elif row.get("fingerprint") != _REMOVED:
                    _remove(row)
        except ApiError as exc:
            _sweep_failure = (time.monotonic(), copy.copy(exc))  # a copy holds no traceback
            raise
        _swept.set()
    finally:
        _sweep_lock.release()


def mark_removed(name: str) -> None:
    """A token names an account the settings no longer have: record that, so the account's
    tokens stay refused if it comes back."""
    with _lock:
        if name in _marked:
            return
    try:
        row = _rows.get("accounts", _row_key(name))
        if row.get("fingerprint") != _REMOVED:
            _remove(row)
    except NotFound:
        pass  # never seen: nothing to keep refused
    with _lock:
        _marked.add(name)


_epochs: dict[str, tuple[float, int]] = {}
_marked: set[str] = set()
_REMOVED = "removed"
_rows = Entities("accounts", what="account state")
_swept = threading.Event()
_sweep_lock = threading.Lock()
_sweep_failure: tuple[float, ApiError] | None = None  # when the last try failed, and why
_sweep_next = 0.0  # when sweep_soon may try (again)
_SWEEP_RETRY_SECONDS = 30


def _fingerprints(account: Account) -> tuple[str, str]:
    """Keyed digests of the credential (under the signing key and the previous one), so what
    storage holds cannot be used to test password guesses. Two, so that instances on either side
    of a key rotation recognise each other's."""
    s = get_settings()

    def mac(key: str) -> str:
        return hmac.new(key.encode(), f"fp|{account.name}|{account.credential}".encode(),
                        hashlib.sha256).hexdigest()[:32]

    return mac(s.token_signing_key), mac(s.token_signing_key_previous) if s.token_signing_key_previous else ""


def _observe(name: str, fingerprints: tuple[str, str]) -> int:
    """The epoch after recording this credential (raised when it is not the one last seen)."""
    key = _row_key(name)
    mine_current, mine_previous = fingerprints
    for _ in range(10):
        try:
            row = _rows.get("accounts", key)
        except NotFound:
            row = None
        mine = {"fingerprint": mine_current, "fingerprintPrevious": mine_previous}
        try:
            if row is None:
                _rows.create("accounts", key, {"name": name, **mine, "epoch": 0})
                return 0
            epoch = int(row.get("epoch", 0))
            current, previous = row.get("fingerprint") or "", row.get("fingerprintPrevious") or ""
            if current == mine_current:
                return epoch
            if mine_previous and current == mine_previous:
                _rows.replace({**row, **mine})  # the same credential, this instance has the newer key
                return epoch
            if previous and mine_current == previous:
                return epoch  # the same credential; this instance has not got the new key yet
            _rows.replace({**row, **mine, "epoch": epoch + 1})  # another credential, or it was removed
            return epoch + 1
        except (Conflict, PreconditionFailed):
            continue  # another instance wrote it first: read again
    raise Unavailable("the account state keeps changing; try again shortly")


def _remove(row: dict) -> None:
    """Marked removed, with a new epoch: whatever any instance writes later, tokens issued
    before the removal carry an older epoch."""
    for _ in range(10):
        try:
            _rows.replace({**row, "fingerprint": _REMOVED, "fingerprintPrevious": "",
                           "epoch": int(row.get("epoch", 0)) + 1})
            return
        except PreconditionFailed:
            try:
                row = _rows.get("accounts", row["RowKey"])
            except NotFound:
                return
            if row.get("fingerprint") == _REMOVED:
                return


def _row_key(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:40]


def _all() -> dict[str, Account]:
    settings = get_settings()
    with _lock:
        hit = _cache.get(id(settings))
        if hit and hit[0] is settings:
            return hit[1]
        roles = settings.roles()
        accounts = {name: Account(name, roles.get(name, "Contributor"), _hashed(name, value))
                    for name, value in settings.accounts().items()}
        _cache.clear()
        _cache[id(settings)] = (settings, accounts)
        return accounts


@lru_cache(maxsize=1)
def _decoy() -> str:
    """What an unknown name is checked against, so it costs what a real one costs."""
    return passwords.hash_password("o16n decoy password", salt=b"o16n-decoy-salt!")


def _hashed(name: str, value: str) -> str:
    if passwords.is_hash(value):
        return value
    # A plain password is hashed once per process. The salt is fixed per name so every instance
    # derives the same hash, hence the same credential version, from the same setting.
    return passwords.hash_password(value, salt=hashlib.sha256(f"o16n-account|{name}".encode()).digest()[:16])
