"""Refresh tokens, stored by hash only."""
from __future__ import annotations

from functools import lru_cache

from .entities import Entities


class RefreshTokens:
    def __init__(self) -> None:
        self._rows = Entities("refreshtokens", what="refresh token")

    def create(self, user: str, token_hash: str, *, expires_on: int) -> None:
        self._rows.create("tokens", token_hash, {"user": user, "expiresOn": expires_on})


@lru_cache(maxsize=1)
def repository() -> RefreshTokens:
    return RefreshTokens()
