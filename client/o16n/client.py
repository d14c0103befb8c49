"""O16nClient: one server, one credential; services, sessions and snapshots hang off it."""
from __future__ import annotations

from typing import Any

from ._http import Transport, segment
from .credentials import AccessTokenCredential, Credential, PasswordCredential
from .errors import ResourceNotFoundError
from .services import RealtimeDefinition, Service, ServiceDefinition
from .sessions import Session, Snapshot

__all__ = ["O16nClient", "DeployClient"]


class O16nClient:
    """:param endpoint: the server, e.g. ``http://localhost:12800`` or ``https://<app>.azurewebsites.net``
    :param credential: a `Credential` (see `o16n.credentials`); None for `status()` only
    :keyword timeout: seconds to wait for one answer (consume calls included)
    :keyword verify: TLS verification: True, or a CA bundle's path"""

    def __init__(self, endpoint: str, credential: Credential | None, *, timeout: float = 120.0,
                 verify: bool | str = True) -> None:
        self._transport = Transport(endpoint, credential, timeout=timeout, verify=verify)

    @property
    def endpoint(self) -> str:
        return self._transport.endpoint

    @property
    def credential(self) -> Credential | None:
        return self._transport.credential

    # services
    def service(self, name: str) -> ServiceDefinition:
        """Starts a standard service's definition: `.version(...).code_fn(...)...deploy()`."""
        return ServiceDefinition(self, name)

    def realtime_service(self, name: str) -> RealtimeDefinition:
        return RealtimeDefinition(self, name)

    def list_services(self, name: str | None = None) -> list[Service]:
        path = "services" if name is None else f"services/{segment(name, 'name')}"
        return [Service(self, body) for body in self._transport.json("GET", path)]

    def get_service(self, name: str, *, version: str | None = None) -> Service:
        """The version given, else the latest published. :raises ResourceNotFoundError:"""
        if version is not None:
            body = self._transport.json("GET", f"services/{segment(name, 'name')}/{segment(version, 'version')}")
            return Service(self, body[0] if isinstance(body, list) else body)
        versions = self._transport.json("GET", f"services/{segment(name, 'name')}")
        if not versions:
            raise ResourceNotFoundError(f"no service named {name!r}", status_code=404, error_code="not_found")
        return Service(self, versions[-1])

    def delete_service(self, name: str, *, version: str, missing_ok: bool = True) -> None:
        """Succeeds when the version is already gone (unless `missing_ok` is False).
        :raises ResourceNotFoundError: with missing_ok=False"""
        self._delete(f"services/{segment(name, 'name')}/{segment(version, 'version')}", missing_ok)

    def _delete(self, path: str, missing_ok: bool) -> None:
        try:
            self._transport.send("DELETE", path)
        except ResourceNotFoundError:
            if not missing_ok:
                raise

    # sessions and snapshots
    def create_session(self, *, name: str | None = None, snapshot_id: str | None = None) -> Session:
        body = {"runtimeType": "Python", "name": name, "snapshotId": snapshot_id}
        answer = self._transport.json("POST", "sessions", json={k: v for k, v in body.items() if v is not None})
        return Session(self, answer["sessionId"], name or "")

    def get_session(self, session_id: str) -> Session:
        """A handle on a session made earlier (no call is made)."""
        return Session(self, session_id)

    def list_sessions(self) -> list[dict[str, Any]]:
        return self._transport.json("GET", "sessions")

    def close_session(self, session_id: str, *, force: bool = False, missing_ok: bool = True) -> None:
        """Succeeds when the session is already gone (unless `missing_ok` is False)."""
        self._delete(f"sessions/{segment(session_id, 'session id')}" + ("/force" if force else ""), missing_ok)

    def list_snapshots(self) -> list[Snapshot]:
        return [Snapshot.from_body(b) for b in self._transport.json("GET", "snapshots")]

    def get_snapshot_content(self, snapshot_id: str) -> bytes:
        """The snapshot as a zip file."""
        return self._transport.send("GET", f"snapshots/{segment(snapshot_id, 'snapshot id')}").content

    def delete_snapshot(self, snapshot_id: str, *, missing_ok: bool = True) -> None:
        """Succeeds when the snapshot is already gone (unless `missing_ok` is False)."""
        self._delete(f"snapshots/{segment(snapshot_id, 'snapshot id')}", missing_ok)

    # the server
    def status(self) -> dict[str, Any]:
        return self._transport.json("GET", "status", authenticated=self.credential is not None)

    def sign_out(self, *, locked: bool = True) -> None:
        """Revoke and forget the credential's tokens (`locked=False`: the caller already holds
        the tokens file's lock)."""
        if self.credential is not None:
            self.credential.sign_out(locked=locked)

    def __repr__(self) -> str:
        return f"O16nClient({self.endpoint!r})"


def DeployClient(host: str, use: Any = None, auth: Any = None) -> O16nClient:  # noqa: N802 - ML Server's name
    """ML Server's constructor, for code moving over: `auth` is (user, password) or an access token.
    `use` is accepted and ignored (there is one server kind)."""
    if isinstance(auth, tuple) and len(auth) == 2:
        return O16nClient(host, PasswordCredential(auth[0], auth[1]))
    if isinstance(auth, str):
        return O16nClient(host, AccessTokenCredential(auth))
    if isinstance(auth, Credential):
        return O16nClient(host, auth)
    raise ValueError("auth must be (username, password), an access token, or an o16n credential; for Entra ID "
                     "use o16n.DeviceCodeCredential or o16n.ClientSecretCredential")
