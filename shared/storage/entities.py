"""One small repository over one table: create-only inserts, ETag-conditioned updates and
deletes, reads that raise NotFound.

A write whose answer was lost (a cut connection) is retried by the SDK, and the retry finds its
own first attempt: an insert meets "already exists", an update "changed since", a delete "not
found". Each insert and update carries a new `writeId`, so such a retry is recognised as the
write having happened rather than reported as someone else's."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from azure.core import MatchConditions
from azure.data.tables import UpdateMode

from ..errors import Conflict, NotFound, PreconditionFailed
from ._clients import RETRY_POSTS, retried, table, translated, uncertain

WRITE_ID = "writeId"


class Entities:
    def __init__(self, suffix: str, *, what: str) -> None:
        self._suffix = suffix
        self._what = what

    def create(self, partition: str, row: str, values: dict[str, Any]) -> dict[str, Any]:
        """:raises Conflict: the key exists."""
        entity = {"PartitionKey": partition, "RowKey": row, **values, WRITE_ID: uuid.uuid4().hex}
        try:
            with translated(self._what):
                meta = table(self._suffix).create_entity(entity, **RETRY_POSTS)
        except Conflict:
            return self._own_write(entity, Conflict)
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
        body[WRITE_ID] = uuid.uuid4().hex
        try:
            with translated(self._what):
                meta = table(self._suffix).update_entity(body, mode=UpdateMode.REPLACE, etag=entity["etag"],
                                                          match_condition=MatchConditions.IfNotModified)
        except PreconditionFailed:
            return self._own_write(body, PreconditionFailed)
        return {**body, "etag": meta.get("etag")}

    def delete(self, entity: dict[str, Any]) -> None:
        """Gone already is done. :raises PreconditionFailed: it changed since it was read."""
        try:
            with translated(self._what):
                table(self._suffix).delete_entity(entity["PartitionKey"], entity["RowKey"], etag=entity["etag"],
                                                  match_condition=MatchConditions.IfNotModified)
        except NotFound:
            pass

    def _own_write(self, written: dict[str, Any], refusal: type[Exception]) -> dict[str, Any]:
        """After an insert or update was refused. Sent once, the refusal stands. Sent again (the
        SDK retried a lost answer): the stored entity if it is this very write, else uncertain,
        as it may have happened and been overwritten since."""
        if not retried():
            raise refusal(f"{self._what} was changed by another request" if refusal is PreconditionFailed
                          else f"{self._what} already exists")
        try:
            stored = self.get(written["PartitionKey"], written["RowKey"])
        except NotFound:
            stored = {}
        if stored.get(WRITE_ID) != written[WRITE_ID]:
            raise uncertain(self._what)
        return stored


def _plain(entity: Any) -> dict[str, Any]:
    out = dict(entity)
    meta = getattr(entity, "metadata", None)
    if meta:
        out["etag"] = meta.get("etag")
    out.setdefault("etag", None)
    return out
