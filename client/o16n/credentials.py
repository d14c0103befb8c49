"""Ways to sign in. Each gives the client a bearer token when asked, renewing it when it can.

- `PasswordCredential`: a local account, through `/login`; renewed through the refresh token
  before it expires (`/login/refreshToken`), revoked by `sign_out`.
- `DeviceCodeCredential`: a person signs in to Entra ID through msal's device code flow.
- `ClientSecretCredential`: a service (app-only token) through msal's client credentials flow.
- `AccessTokenCredential`: a token obtained elsewhere, used as is.

A `cache_path` keeps tokens between processes (the CLI's profile uses one): written owner-only,
never holding a password or a client secret."""
from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _files
from .errors import ClientAuthenticationError, HttpResponseError, O16nError

if TYPE_CHECKING:
    from ._http import Transport

__all__ = ["Credential", "PasswordCredential", "AccessTokenCredential", "DeviceCodeCredential",
           "ClientSecretCredential"]

#: renew when this little of a token's life is left (or a tenth of it, if that is less)
_MARGIN_SECONDS = 300


def _seconds(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default  # a server's odd answer costs an early renewal, nothing more


class Credential:
    """What the client asks for a token. `can_refresh`: a 401 is worth one more try."""

    can_refresh = False
    _transport: Transport | None = None

    def attach(self, transport: Transport) -> None:
        self._transport = transport

    def get_token(self, *, force_refresh: bool = False) -> str:
        raise NotImplementedError

    def sign_out(self, *, locked: bool = True) -> None:
        """Forget the tokens (and revoke them where the server can)."""

    def persist(self, cache_path: str | Path) -> None:
        """Keep the tokens in `cache_path` from now on (a sign-in made in memory, once it works)."""
        raise NotImplementedError


class AccessTokenCredential(Credential):
    def __init__(self, token: str) -> None:
        if not isinstance(token, str) or not token.strip():
            raise ValueError("token must be a non-empty string")
        self._token = token.strip()

    def get_token(self, *, force_refresh: bool = False) -> str:
        return self._token

    def persist(self, cache_path: str | Path) -> None:
        _files.write_private(Path(cache_path), json.dumps({"access_token": self._token}).encode())

    @classmethod
    def from_cache(cls, cache_path: str | Path) -> AccessTokenCredential:
        token = _files.read_json(Path(cache_path)).get("access_token")
        if not token:
            raise ClientAuthenticationError("no token kept: sign in again (o16n login --token-stdin)")
        return cls(token)


class PasswordCredential(Credential):
    """A local account. The password is kept in memory only (never in `cache_path`); without it,
    the cached refresh token keeps the sign-in alive until it lapses or is revoked."""

    can_refresh = True

    def __init__(self, username: str, password: str | None = None, *, cache_path: str | Path | None = None) -> None:
        if not isinstance(username, str) or not username:
            raise ValueError("username must be a non-empty string")
        self.username = username
        self._password = password
        self._cache = Path(cache_path) if cache_path else None
        self._tokens: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        if self._cache is None:
            return
        tokens = _files.read_json(self._cache)
        self._tokens = tokens if tokens.get("username") == self.username else {}

    def _save(self) -> None:
        if self._cache is not None:
            _files.write_private(self._cache, json.dumps(self._tokens).encode())

    def _fresh(self) -> bool:
        left = self._tokens.get("expires_on", 0) - time.time()
        return bool(self._tokens.get("access_token")) and left > min(_MARGIN_SECONDS, self._tokens.get("expires_in", 3600) / 10)

    def get_token(self, *, force_refresh: bool = False) -> str:
        with self._lock:
            if force_refresh or not self._fresh():
                if self._cache is None:
                    self._renew()
                else:
                    with _files.locked(self._cache):
                        stale = self._tokens.get("access_token")
                        self._load()  # another process may have renewed already
                        if not self._fresh() or (force_refresh and self._tokens.get("access_token") == stale):
                            self._renew()
            return self._tokens["access_token"]

    def _renew(self) -> None:
        refresh = self._tokens.get("refresh_token")
        if refresh:
            try:
                self._store(self._post("login/refreshToken", {"refreshToken": refresh}))
                return
            except ClientAuthenticationError:
                if self._password is None:
                    self._forget()
                    raise ClientAuthenticationError("the sign-in has expired or was revoked: sign in again "
                                                    "(o16n login)", status_code=401) from None
        if self._password is None:
            raise ClientAuthenticationError("not signed in: sign in first (o16n login)")
        self._store(self._post("login", {"username": self.username, "password": self._password}))

    def _post(self, path: str, body: dict) -> dict:
        if self._transport is None:
            raise O16nError("the credential is not attached to a client")
        answer = self._transport.json("POST", path, json=body, authenticated=False)
        if not isinstance(answer, dict) or "access_token" not in answer:
            raise ClientAuthenticationError("the server's answer to a sign-in held no token")
        return answer

    def _store(self, answer: dict) -> None:
        now = time.time()
        expires_in = _seconds(answer.get("expires_in"), 3600)
        self._tokens = {"username": self.username, "access_token": str(answer["access_token"]),
                        "refresh_token": answer.get("refresh_token"), "expires_in": expires_in,
                        "expires_on": _seconds(answer.get("expires_on"), int(now) + expires_in)}
        self._save()

    def _forget(self) -> None:
        self._tokens = {}
        if self._cache is not None:
            _files.remove(self._cache)

    def persist(self, cache_path: str | Path) -> None:
        self._cache = Path(cache_path)
        self._save()

    def sign_out(self, *, locked: bool = True) -> None:
        """Revokes the refresh token, then forgets the tokens. When the server cannot be told,
        they are kept (and this raises), so signing out can be tried again."""
        with self._lock, (_files.locked(self._cache) if locked and self._cache else contextlib.nullcontext()):
            self._load()  # what another process renewed meanwhile is what there is to revoke
            refresh = self._tokens.get("refresh_token")
            try:
                if refresh and self._transport is not None:
                    # in the body, not ML Server's query parameter: URLs end up in request logs
                    self._transport.send("DELETE", "login/refreshToken", json={"refreshToken": refresh},
                                         authenticated=False)
            except HttpResponseError as exc:
                if exc.status_code != 401:  # a 400 means the token never arrived (a proxy dropped the body)
                    raise
                # already revoked or expired: nothing left to revoke
            self._forget()


class _MsalCredential(Credential):
    can_refresh = True

    def __init__(self, client_id: str, *, authority: str, scopes: list[str], cache_path: str | Path | None,
                 http_client: Any = None) -> None:
        import msal  # only Entra sign-ins need it loaded

        if not client_id or not authority or not scopes:
            raise ValueError("client_id, authority and scopes are required")
        self.client_id, self.authority, self.scopes = client_id, authority.rstrip("/"), list(scopes)
        self._cache_path = Path(cache_path) if cache_path else None
        self._cache = msal.SerializableTokenCache()
        if self._cache_path is not None:
            raw = _files.read_private(self._cache_path)
            if raw:
                try:
                    self._cache.deserialize(raw.decode())
                except ValueError:
                    raise O16nError(f"{self._cache_path} cannot be read: sign in again (o16n login)") from None
        self._lock = threading.Lock()
        self._http_client = http_client
        self._app: Any = None  # msal's application, made at the first token asked for

    def _app_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"authority": self.authority, "token_cache": self._cache,
                                   "instance_discovery": False,  # the authority is the one given, never looked up
                                   "timeout": 30}
        if self._http_client is not None:
            options["http_client"] = self._http_client
        return options

    def _save(self, *, changed: bool = False) -> None:
        if self._cache_path is not None and (changed or self._cache.has_state_changed):
            _files.write_private(self._cache_path, self._cache.serialize().encode())
            self._cache.has_state_changed = False

    def persist(self, cache_path: str | Path) -> None:
        self._cache_path = Path(cache_path)
        self._save(changed=True)

    def sign_out(self, *, locked: bool = True) -> None:
        # Entra tokens cannot be revoked by their holder: forgetting them is what a client can do
        if self._cache_path is not None:
            _files.remove(self._cache_path)

    @staticmethod
    def _token(result: dict | None, doing: str) -> str:
        if result and result.get("access_token"):
            return result["access_token"]
        result = result or {}
        # msal's descriptions end with trace and correlation ids over several lines: the first is the reason
        reason = (result.get("error_description") or result.get("error") or "no token").splitlines()[0]
        raise ClientAuthenticationError(f"{doing} failed: {reason}", error_code=result.get("error"))


class DeviceCodeCredential(_MsalCredential):
    """A person's Entra sign-in. `prompt` shows msal's instructions (a URL and a code); without
    it, only tokens already cached (and renewable) are used."""

    def __init__(self, client_id: str, *, authority: str, scopes: list[str], cache_path: str | Path | None = None,
                 prompt: Callable[[str], None] | None = None, http_client: Any = None) -> None:
        super().__init__(client_id, authority=authority, scopes=scopes, cache_path=cache_path,
                         http_client=http_client)
        self._prompt = prompt

    def _application(self) -> Any:
        import msal

        if self._app is None:
            self._app = msal.PublicClientApplication(self.client_id, **self._app_options())
        return self._app

    def get_token(self, *, force_refresh: bool = False) -> str:
        with self._lock:
            app = self._application()
            accounts = app.get_accounts()
            if accounts:
                result = app.acquire_token_silent(self.scopes, account=accounts[0], force_refresh=force_refresh)
                if result and result.get("access_token"):
                    self._save()
                    return result["access_token"]
            if self._prompt is None:
                raise ClientAuthenticationError("not signed in to Entra ID, or the sign-in lapsed: "
                                                "sign in again (o16n login --device-code)")
            flow = app.initiate_device_flow(scopes=self.scopes)
            if "user_code" not in flow:
                self._token(flow, "starting the device code sign-in")
            self._prompt(flow["message"])
            result = app.acquire_token_by_device_flow(flow)
            token = self._token(result, "the device code sign-in")
            self._save()
            return token

    def sign_out(self, *, locked: bool = True) -> None:
        with self._lock:
            if self._app is not None:  # never made just to sign out: that would need the authority
                for account in self._app.get_accounts():
                    self._app.remove_account(account)
            super().sign_out(locked=locked)


class ClientSecretCredential(_MsalCredential):
    """A service's own Entra identity (app-only token, scope `api://<api>/.default`). The secret
    stays in memory: cached tokens are reused until they near expiry."""

    def __init__(self, client_id: str, client_secret: str | None, *, authority: str, scopes: list[str],
                 cache_path: str | Path | None = None, http_client: Any = None) -> None:
        super().__init__(client_id, authority=authority, scopes=scopes, cache_path=cache_path,
                         http_client=http_client)
        self._secret = client_secret

    def get_token(self, *, force_refresh: bool = False) -> str:
        import msal

        with self._lock:
            if not force_refresh:
                cached = self._cached()
                if cached:
                    return cached
            if not self._secret:
                raise ClientAuthenticationError("the client secret is needed to get a new token "
                                                "(set O16N_CLIENT_SECRET)")
            if self._app is None:
                self._app = msal.ConfidentialClientApplication(self.client_id, client_credential=self._secret,
                                                               **self._app_options())
            if force_refresh:  # msal answers from its cache first: drop what a 401 showed to be refused
                for item in self._app_tokens():
                    self._cache.remove_at(item)
            result = self._app.acquire_token_for_client(scopes=self.scopes)
            token = self._token(result, "the client credentials sign-in")
            self._save()
            return token

    def _app_tokens(self) -> list[dict]:
        wanted = {s.lower() for s in self.scopes}
        return [item for item in self._cache.search(self._cache.CredentialType.ACCESS_TOKEN,
                                                    query={"client_id": self.client_id})
                if wanted <= set(item.get("target", "").lower().split())]

    def _cached(self) -> str | None:
        # an app token in the cache, good for a while yet; read without msal's app (that needs the secret)
        for item in self._app_tokens():
            if int(item.get("expires_on", 0)) - time.time() > _MARGIN_SECONDS:
                return item["secret"]
        return None
