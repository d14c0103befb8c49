"""Sessions (a Python interpreter on the server, kept between calls) and snapshots of them."""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle

from . import _types
from ._http import segment

if TYPE_CHECKING:
    from .client import O16nClient

__all__ = ["Session", "Snapshot", "ExecuteResult"]


@dataclass(frozen=True)
class Snapshot:
    id: str
    name: str = ""
    owner: str = ""
    creation_time: str = ""
    content_size: int = 0

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Snapshot:
        try:
            size = int(body.get("contentSize") or 0)
        except (TypeError, ValueError):
            size = 0
        return cls(str(body["id"]), str(body.get("name") or ""), str(body.get("owner") or ""),
                   str(body.get("creationTime") or ""), size)


@dataclass(frozen=True)
class ExecuteResult:
    success: bool
    error: str
    console_output: str
    outputs: dict[str, Any]
    changed_files: list[str]

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ExecuteResult:
        return cls(bool(body.get("success")), body.get("errorMessage") or "", body.get("consoleOutput") or "",
                   {p["name"]: p.get("value") for p in body.get("outputParameters") or []},
                   list(body.get("changedFiles") or []))


class Session:
    """Use it as a context manager: it closes on the way out."""

    def __init__(self, client: O16nClient, session_id: str, name: str = "") -> None:
        self._client = client
        self.id = session_id
        self.name = name

    @property
    def _path(self) -> str:
        return f"sessions/{segment(self.id, 'session id')}"

    def _json(self, method: str, path: str = "", **kwargs: Any) -> Any:
        return self._client._transport.json(method, self._path + path, **kwargs)

    def execute(self, code: str, *, inputs: dict[str, Any] | None = None,
                outputs: list[str] | None = None) -> ExecuteResult:
        body = {"code": code, "inputParameters": [{"name": k, "value": _types.encode(v)}
                                                  for k, v in (inputs or {}).items()],
                "outputParameters": list(outputs or [])}
        return ExecuteResult.from_body(self._json("POST", "/execute", json=body))

    def console_output(self) -> str:
        return (self._json("GET", "/console-output") or {}).get("consoleOutput", "")

    def history(self) -> list[str]:
        return self._json("GET", "/history")

    def list_objects(self) -> list[str]:
        return self._json("GET", "/workspace")

    def set_object(self, name: str, value: Any) -> None:
        """Pickled here (cloudpickle, so functions and classes travel by value)."""
        self.set_object_bytes(name, cloudpickle.dumps(value))

    def set_object_bytes(self, name: str, data: bytes) -> None:
        """An object already pickled (a model file, say), sent as it is."""
        if not data:
            raise ValueError("the object is empty")
        self._client._transport.send("POST", f"{self._path}/workspace/{segment(name, 'object name')}",
                                     data=data, headers={"Content-Type": "application/octet-stream"})

    def get_object_bytes(self, name: str) -> bytes:
        return self._client._transport.send("GET", f"{self._path}/workspace/{segment(name, 'object name')}").content

    def get_object(self, name: str) -> Any:
        """Unpickles what the session holds. Unpickling runs code: only for sessions whose code you trust."""
        return pickle.loads(self.get_object_bytes(name))  # noqa: S301 - the caller's own session

    def delete_object(self, name: str) -> None:
        self._json("DELETE", f"/workspace/{segment(name, 'object name')}")

    def list_files(self) -> list[str]:
        return self._json("GET", "/files")

    def upload_file(self, path: str | Path, *, name: str | None = None) -> None:
        path = Path(path)
        self._client._transport.send("POST", f"{self._path}/files",
                                     files={"file": (name or path.name, path.read_bytes(), "application/octet-stream")})

    def get_file(self, name: str) -> bytes:
        return self._client._transport.send("GET", f"{self._path}/files/{segment(name, 'file name')}").content

    def delete_file(self, name: str) -> None:
        self._json("DELETE", f"/files/{segment(name, 'file name')}")

    def snapshot(self, name: str | None = None) -> Snapshot:
        answer = self._json("POST", "/snapshot", json={"name": name} if name else {})
        return Snapshot(answer["snapshotId"], name or "")

    def load_snapshot(self, snapshot_id: str) -> None:
        self._json("POST", f"/loadsnapshot/{segment(snapshot_id, 'snapshot id')}")

    def cancel(self) -> None:
        self._json("POST", "/cancel")

    def close(self, *, force: bool = False) -> None:
        self._client.close_session(self.id, force=force)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Session(id={self.id!r}, name={self.name!r})"
