"""One small repository over one table: create-only inserts, ETag-conditioned updates and
deletes, reads that raise NotFound."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from azure.core import MatchConditions
from azure.data.tables import UpdateMode

from ._clients import table, translated


class Entities:
    def __init__(self, suffix: str, *, what: str) -> None:
        self._suffix = suffix
        self._what = what

    def create(self, partition: str, row: str, values: dict[str, Any]) -> dict[str, Any]:
        """:raises Conflict: the key exists."""
        entity = {"PartitionKey": partition, "RowKey": row, **values}
        with translated(self._what):
            meta = table(self._suffix).create_entity(entity)
        entity["etag"] = meta.get("etag")
        return _plain(entity)

    def get(self, partition: str, row: str) -> dict[str, Any]:
        """:raises NotFound: no such key."""
        with translated(self._what):
            entity = table(self._suffix).get_entity(partition, row)
        return _plain(entity)

    def list(self, partition: str | None = None) -> Iterator[dict[str, Any]]:
        with translated(self._what):
            client = table(self._suffix)
            if partition is None:
                rows = list(client.list_entities())
            else:
                rows = list(client.query_entities("PartitionKey eq @pk", parameters={"pk": partition}))
        return (_plain(e) for e in rows)

    def replace(self, entity: dict[str, Any]) -> dict[str, Any]:
        """Write back an entity read earlier. :raises PreconditionFailed: it changed since."""
        body = {k: v for k, v in entity.items() if k != "etag"}
        with translated(self._what):
            meta = table(self._suffix).update_entity(body, mode=UpdateMode.REPLACE, etag=entity["etag"],
                                                      match_condition=MatchConditions.IfNotModified)
        return {**entity, "etag": meta.get("etag")}

    def delete(self, entity: dict[str, Any]) -> None:
        """:raises PreconditionFailed: it changed since it was read."""
        with translated(self._what):
            table(self._suffix).delete_entity(entity["PartitionKey"], entity["RowKey"], etag=entity["etag"],
                                              match_condition=MatchConditions.IfNotModified)


def _plain(entity: Any) -> dict[str, Any]:
    out = dict(entity)
    meta = getattr(entity, "metadata", None)
    if meta:
        out["etag"] = meta.get("etag")
    out.setdefault("etag", None)
    return out
