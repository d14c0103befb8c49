"""Login throttling. Failures are counted per user name and per client address in Table storage,
so every instance sees them. At the limit the name (or address) is locked out: every attempt,
the right password included, answers 429 until the lock ends; each later failure locks again,
twice as long as the time before."""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field

from .config import get_settings
from .errors import Conflict, NotFound, PreconditionFailed, TooManyRequests
from .storage.entities import Entities

_rows = Entities("loginfailures", what="login record")
_ATTEMPTS = 5  # tries of an ETag-conditioned update before giving up on counting one failure


@dataclass
class Attempt:
    user: str
    address: str
    _rows: dict[tuple[str, str], dict | None] = field(default_factory=dict)

    def failed(self) -> None:
        s = get_settings()
        _count(("user", _key(self.user)), s.login_max_failures, self._rows.get(("user", _key(self.user))))
        _count(("address", _key(self.address)), s.login_max_failures_per_address,
               self._rows.get(("address", _key(self.address))))

    def succeeded(self) -> None:
        # Only the name's count is cleared: an address may be shared with an attacker (NAT).
        row = self._rows.get(("user", _key(self.user)))
        if row is not None:
            try:
                _rows.delete(row)
            except (NotFound, PreconditionFailed):
                pass


def begin(user: str, address: str) -> Attempt:
    """:raises TooManyRequests: the name or the address is locked out."""
    attempt = Attempt(user, address)
    now = time.time()
    wait = 0.0
    for kind, value in (("user", user), ("address", address)):
        try:
            row = _rows.get(kind, _key(value))
        except NotFound:
            row = None
        attempt._rows[(kind, _key(value))] = row
        if row is not None:
            wait = max(wait, float(row.get("lockedUntil", 0)) - now)
    if wait > 0:
        raise TooManyRequests(f"too many failed logins; try again in {math.ceil(wait)} seconds",
                              retry_after=math.ceil(wait))
    return attempt


def _count(key: tuple[str, str], limit: int, row: dict | None) -> None:
    s = get_settings()
    for _ in range(_ATTEMPTS):
        now = time.time()
        state = {"failures": 0, "lockouts": 0, "lockedUntil": 0.0}
        if row is not None:
            quiet_since = max(float(row.get("lastFailure", 0)), float(row.get("lockedUntil", 0)))
            if now - quiet_since <= s.login_failure_window_seconds:
                state = {k: row.get(k, state[k]) for k in state}
        state["failures"] = int(state["failures"]) + 1
        state["lastFailure"] = now
        if state["failures"] >= limit and float(state["lockedUntil"]) <= now:
            state["lockouts"] = int(state["lockouts"]) + 1
            lock = min(s.login_lockout_max_seconds, s.login_lockout_seconds * 2 ** (state["lockouts"] - 1))
            state["lockedUntil"] = now + lock
        try:
            if row is None:
                _rows.create(*key, state)
            else:
                _rows.replace({**row, **state})
            return
        except (Conflict, PreconditionFailed):  # another instance counted at the same time: count again
            try:
                row = _rows.get(*key)
            except NotFound:
                row = None


def _key(value: str) -> str:
    # Table keys may not hold '/', '\\', '#' or '?'; a digest also keeps names out of storage.
    return hashlib.sha256(value.encode()).hexdigest()[:40]
