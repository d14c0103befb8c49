"""Login throttling. Attempts are counted per user name and per client address in Table storage,
so every instance sees them. Each attempt is counted before its password is checked, so
parallel requests get no more checks than the limit. At the limit the name (or address) is
locked out: every attempt, the right password included, answers 429 until the lock ends; the
first failure after it locks again, twice as long as the time before. A success clears the
name's count and takes its own attempt back from the address's."""
from __future__ import annotations

import hashlib
import math
import random
import time
from dataclasses import dataclass

from .config import get_settings
from .errors import Conflict, NotFound, PreconditionFailed, TooManyRequests
from .storage.entities import Entities

_rows = Entities("loginfailures", what="login record")
_TRIES = 12  # ETag-conditioned updates of one count before the attempt is refused as a crowd


@dataclass
class Attempt:
    """One login attempt, already counted as a failure; `succeeded` takes it back."""
    user_key: tuple[str, str]
    address_key: tuple[str, str]
    #: the address's state before and after this attempt was counted
    address_change: tuple[dict, dict] | None = None

    def succeeded(self) -> None:
        _update(self.user_key, lambda row: None)
        before, after = self.address_change or ({}, {})
        _update(self.address_key, lambda row: _undo(row, before, after))


def begin(user: str, address: str) -> Attempt:
    """Count one attempt for the name and the address.
    :raises TooManyRequests: either is locked out (or too many attempts race for it)."""
    s = get_settings()
    attempt = Attempt(("user", _key(user)), ("address", _key(address)))
    # The name first: retrying a locked name must not use up its address's budget (a shared NAT).
    _reserve(attempt.user_key, s.login_max_failures)
    try:
        attempt.address_change = _reserve(attempt.address_key, s.login_max_failures_per_address)
    except TooManyRequests:
        _update(attempt.user_key, lambda row: _undo(row, {}, {}))
        raise
    return attempt


def _reserve(key: tuple[str, str], limit: int) -> tuple[dict, dict]:
    """Count one attempt; returns the state before and after. :raises TooManyRequests:"""
    s = get_settings()
    locked_for = 0.0
    change: tuple[dict, dict] = ({}, {})

    def count(row: dict | None) -> dict | None:
        nonlocal locked_for, change
        now = time.time()
        state = {"failures": 0, "lockouts": 0, "lockedUntil": 0.0, "lastFailure": 0.0}
        if row is not None:
            quiet_since = max(float(row.get("lastFailure", 0)), float(row.get("lockedUntil", 0)))
            if now - quiet_since <= s.login_failure_window_seconds:
                state = {k: row.get(k, state[k]) for k in state}
        locked_for = float(state["lockedUntil"]) - now
        if locked_for > 0:
            return row  # unchanged: attempts during a lock-out do not lengthen it
        before = dict(state)
        state["failures"] = int(state["failures"]) + 1
        state["lastFailure"] = now
        if state["failures"] >= limit:
            state["lockouts"] = int(state["lockouts"]) + 1
            state["lockedUntil"] = now + min(s.login_lockout_max_seconds,
                                             s.login_lockout_seconds * 2 ** (state["lockouts"] - 1))
        change = (before, dict(state))
        return state

    if not _update(key, count):
        raise TooManyRequests("too many login attempts at once; try again in a second", retry_after=1)
    if locked_for > 0:
        raise TooManyRequests(f"too many failed logins; try again in {math.ceil(locked_for)} seconds",
                              retry_after=math.ceil(locked_for))
    return change


def _undo(row: dict | None, before: dict, after: dict) -> dict | None:
    """Take one counted attempt back; a lock-out (and failure time) it alone set goes with it."""
    if row is None or int(row.get("failures", 0)) <= 0:
        return row
    new = {**row, "failures": int(row["failures"]) - 1}
    if after and float(row.get("lockedUntil", 0)) == float(after["lockedUntil"]) and \
            int(after["lockouts"]) > int(before["lockouts"]):
        new.update(lockedUntil=before["lockedUntil"], lockouts=before["lockouts"])
    if after and float(row.get("lastFailure", 0)) == float(after["lastFailure"]):
        new["lastFailure"] = before["lastFailure"]
    if new["failures"] <= 0 and float(new.get("lockedUntil", 0)) <= time.time() and not int(new.get("lockouts", 0)):
        return None  # nothing left to remember: the row goes
    return new


def _update(key: tuple[str, str], change) -> bool:
    """Apply `change` (row or None -> new values, the same row to keep it, None to delete) until
    no other instance changed the row in between. False when it kept losing."""
    for attempt in range(_TRIES):
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
            time.sleep(random.uniform(0, 0.01 * (attempt + 1)))  # someone else counted: read and count again
    return False


def _key(value: str) -> str:
    # Table keys may not hold '/', '\\', '#' or '?'; a digest also keeps names out of storage.
    return hashlib.sha256(value.encode()).hexdigest()[:40]
