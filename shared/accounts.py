"""Local accounts as the settings define them now: each holds only a scrypt hash of its password,
and a credential version that every token of the account carries, so a removed account or a
changed password ends its tokens at once."""
from __future__ import annotations

import base64
import hashlib
import hmac
import threading
from dataclasses import dataclass
from functools import lru_cache

from . import passwords
from .config import Settings, get_settings


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


def credential_version(account: Account, key: str) -> str:
    """A short keyed digest of the account's name and credential (the key keeps it from being a
    password hash an attacker could test guesses against)."""
    mac = hmac.new(key.encode(), f"cv|{account.name}|{account.credential}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:16]).rstrip(b"=").decode()


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
