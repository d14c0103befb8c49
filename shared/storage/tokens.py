"""Refresh-token families: one row per login chain, holding the hash of its one live refresh
token and the generation that access tokens of the chain must carry."""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from .entities import Entities

PARTITION = "families"


class TokenFamilies:
    def __init__(self) -> None:
        self._rows = Entities("tokenfamilies", what="refresh token")

    def create(self, family: str, values: dict[str, Any]) -> dict[str, Any]:
        return self._rows.create(PARTITION, family, values)

    def get(self, family: str) -> dict[str, Any]:
        """:raises NotFound:"""
        return self._rows.get(PARTITION, family)

    def replace(self, row: dict[str, Any]) -> dict[str, Any]:
        """:raises PreconditionFailed: another renew or revoke got there first."""
        return self._rows.replace(row)


@lru_cache(maxsize=1)
def repository() -> TokenFamilies:
    return TokenFamilies()
