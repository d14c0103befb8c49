"""Login throttling. Failed logins are counted per user name and per client address in Table
storage, so every instance sees them. At the limit the name (or address) is locked out: every
attempt, the right password included, answers 429 until the lock ends; the first failure after
it locks again, twice as long as the time before. A success clears the name's count; the
address's is left as it is.

Only a wrong password is counted as a failure, after it was checked. So that parallel guesses
get no more checks than the limit, each attempt first takes a place among the checks in flight:
failures and checks in flight together stay within the limit, and attempts beyond it answer 429
at once. A place that is not given back within _IN_FLIGHT_SECONDS (its instance stopped, or
storage failed while its outcome was written) counts as a failure: an answer whose count was
lost must not be a free guess."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .config import get_settings
from .errors import Conflict, NotFound, PreconditionFailed, StorageUnavailable, TooManyRequests
from .storage.entities import Entities

log = logging.getLogger("o16n")

_rows = Entities("loginfailures", what="login record")
#: longer than any login takes (its storage calls each end within STORAGE_TIMEOUT_SECONDS)
_IN_FLIGHT_SECONDS = 60
#: checks in flight per name or address at most (a Table property holds 64 KiB)
_MAX_IN_FLIGHT = 1000
_CROWDED = "too many login attempts at once; try again in a second"

Row = dict | None


@dataclass
class Attempt:
    """One login attempt, holding a place among the checks in flight until it is settled."""
    user_key: tuple[str, str]
    address_key: tuple[str, str]
    ticket: str

    def succeeded(self) -> None:
        """The name's count is cleared (whoever has its password is its owner); the address's is
        kept, as others behind a shared address may be guessing."""
        self._settle(self.user_key, lambda row, now: _stored(dict(_FRESH), _in_flight(row, now, self.ticket), now))
        self._settle(self.address_key, lambda row, now: self._given_back(row, now, self.address_key))

    def failed(self) -> None:
        self._settle(self.user_key, _counting(self.ticket, _limit(self.user_key)))
        self._settle(self.address_key, _counting(self.ticket, _limit(self.address_key)))

    def _given_back(self, row: Row, now: float, key: tuple[str, str]) -> Row:
        """The attempt's place given back; the counts as they are."""
        if row is None or self.ticket not in _in_flight(row, now):
            return row
        return _stored(_state(row, now, _limit(key)), _in_flight(row, now, self.ticket), now)

    def _settle(self, key: tuple[str, str], change: Callable[[Row, float], Row]) -> None:
        if not _update(key, lambda row: change(row, time.time())):
            # Its place stays taken, and counts as a failure when it lapses.
            log.warning("a login attempt could not be settled (%s): others kept changing the record", key[0])


def begin(user: str, address: str) -> Attempt:
    """Take a place among the checks in flight for the name and the address.
    :raises TooManyRequests: either is locked out, or has as many checks in flight as failures
    it may still have."""
    attempt = Attempt(("user", _key(user)), ("address", _key(address)), secrets.token_hex(6))
    # The name first: retrying a locked name must not use up its address's budget (a shared NAT).
    _reserve(attempt.user_key, attempt.ticket, _limit(attempt.user_key))
    try:
        _reserve(attempt.address_key, attempt.ticket, _limit(attempt.address_key))
    except TooManyRequests:
        attempt._settle(attempt.user_key, lambda row, now: attempt._given_back(row, now, attempt.user_key))
        raise
    return attempt


_FRESH = {"failures": 0, "lockouts": 0, "lockedUntil": 0.0, "lastFailure": 0.0}


def _reserve(key: tuple[str, str], ticket: str, limit: int) -> None:
    """:raises TooManyRequests:"""
    locked_for, crowded = 0.0, False

    def hold(row: Row) -> Row:
        nonlocal locked_for, crowded
        now = time.time()
        state, in_flight = _state(row, now, limit), _in_flight(row, now)
        locked_for = float(state["lockedUntil"]) - now
        if locked_for > 0 and _lapsed(row, now):
            return _stored(state, in_flight, now)  # places that lapsed made a lock: keep it
        # Past a lock that ended, one check: its failure locks again.
        crowded = len(in_flight) >= min(max(1, limit - int(state["failures"])), _MAX_IN_FLIGHT)
        if locked_for > 0 or crowded:
            return row  # unchanged: attempts refused do not lengthen a lock
        return _stored(state, {**in_flight, ticket: math.ceil(now + _IN_FLIGHT_SECONDS)}, now)

    if not _update(key, hold):
        raise TooManyRequests(_CROWDED, retry_after=1)
    if locked_for > 0:
        raise TooManyRequests(f"too many failed logins; try again in {math.ceil(locked_for)} seconds",
                              retry_after=math.ceil(locked_for))
    if crowded:
        raise TooManyRequests(_CROWDED, retry_after=1)


def _counting(ticket: str, limit: int) -> Callable[[Row, float], Row]:
    """One failure, in place of the attempt's check in flight; at the limit, a lock."""
    def count(row: Row, now: float) -> Row:
        state = _state(row, now, limit)
        state["failures"] = int(state["failures"]) + 1
        state["lastFailure"] = now
        _lock_at(limit, state, now)
        return _stored(state, _in_flight(row, now, ticket), now)

    return count


def _limit(key: tuple[str, str]) -> int:
    s = get_settings()
    return s.login_max_failures if key[0] == "user" else s.login_max_failures_per_address


def _lock_at(limit: int, state: dict, now: float) -> None:
    """A lock when the failures reach the limit. A failure during a lock (its check began before
    the lock) does not lengthen it."""
    s = get_settings()
    if int(state["failures"]) >= limit and float(state["lockedUntil"]) <= now:
        state["lockouts"] = int(state["lockouts"]) + 1
        state["lockedUntil"] = now + min(s.login_lockout_max_seconds,
                                         s.login_lockout_seconds * 2 ** (state["lockouts"] - 1))


def _state(row: Row, now: float, limit: int) -> dict:
    """The counts, forgotten after LOGIN_FAILURE_WINDOW_SECONDS without a failure or a lock.
    Places that lapsed count as failures (and lock at the limit), as if they failed now."""
    if row is None:
        return dict(_FRESH)
    state = {k: row.get(k, v) for k, v in _FRESH.items()}
    lapsed = _lapsed(row, now)
    if lapsed:
        state["failures"] = int(state["failures"]) + len(lapsed)
        state["lastFailure"] = max(float(state["lastFailure"]), float(max(lapsed)))
    quiet_since = max(float(state["lastFailure"]), float(state["lockedUntil"]))
    if now - quiet_since > get_settings().login_failure_window_seconds:
        return dict(_FRESH)
    if lapsed:
        _lock_at(limit, state, now)
    return state


def _lapsed(row: Row, now: float) -> list[int]:
    return [until for until in _held(row).values() if until <= now]


def _in_flight(row: Row, now: float, without: str = "") -> dict[str, int]:
    """Checks in flight that have not lapsed: ticket -> when it lapses."""
    return {t: until for t, until in _held(row).items() if t != without and until > now}


def _held(row: Row) -> dict[str, int]:
    try:
        held = json.loads((row or {}).get("inFlight") or "{}")
    except ValueError:
        held = None
    if not isinstance(held, dict):
        return {}
    return {t: int(until) for t, until in held.items() if isinstance(until, (int, float))}


def _stored(state: dict, in_flight: dict[str, int], now: float) -> Row:
    if not int(state["failures"]) and not int(state["lockouts"]) and float(state["lockedUntil"]) <= now \
            and not in_flight:
        return None  # nothing left to remember: the row goes
    return {**state, "inFlight": json.dumps(in_flight, separators=(",", ":"))}


def _update(key: tuple[str, str], change: Callable[[Row], Row]) -> bool:
    """Apply `change` (row or None -> new values, the same row to keep it, None to delete) until
    no other instance changed the row in between, for up to STORAGE_TIMEOUT_SECONDS. False when
    it kept losing. :raises StorageUnavailable:"""
    start = time.monotonic()
    deadline = start + get_settings().storage_timeout_seconds
    # One writer per row in this process: threads racing for one ETag mostly lose, and a crowd
    # of them (a busy NAT's logins) kept losing until their time was up.
    stripe = hash(key) % len(_writers)
    if not _writers[stripe].acquire(timeout=deadline - start):
        return False
    try:
        if _stalled[stripe] > start:  # the writer before failed while this one waited: no second wait
            raise StorageUnavailable("storage is not answering; try again shortly")
        try:
            return _write(key, change, deadline)
        except StorageUnavailable:
            _stalled[stripe] = time.monotonic()
            raise
    finally:
        _writers[stripe].release()


_writers = [threading.Lock() for _ in range(64)]
_stalled = [0.0] * len(_writers)  # when storage last failed a writer of each stripe


def _write(key: tuple[str, str], change: Callable[[Row], Row], deadline: float) -> bool:
    lost = 0
    while True:
        try:
            row = _rows.get(*key)
        except NotFound:
            row = None
        new = change(row)
        try:
            if new is row:
                return True
            if new is None:
                _rows.delete(row)
            elif row is None:
                _rows.create(*key, new)
            else:
                _rows.replace({**row, **new})
            return True
        except (Conflict, PreconditionFailed, NotFound):
            lost += 1  # another instance wrote it: read and change again, after a growing pause
            if time.monotonic() >= deadline:
                return False
            time.sleep(random.uniform(0, min(0.2, 0.005 * 2 ** min(lost, 6))))


def _key(value: str) -> str:
    # Table keys may not hold '/', '\\', '#' or '?'; a digest also keeps names out of storage.
    return hashlib.sha256(value.encode()).hexdigest()[:40]
