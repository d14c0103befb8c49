"""The CLI's memory: which server, and how to sign in to it (a profile), plus the tokens.

Files live in `O16N_CONFIG_DIR` (default ~/.config/o16n), owner-only:
`<profile>.json` (server, method, user name or Entra ids; never a secret) and
`<profile>.tokens.json` (o16n's tokens, a given token, or msal's cache)."""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import _files
from ._http import TrustingSession
from .client import O16nClient
from .credentials import (AccessTokenCredential, ClientSecretCredential, Credential, DeviceCodeCredential,
                          PasswordCredential)
from .errors import ClientAuthenticationError, O16nError

METHODS = ("password", "token", "device-code", "client-credentials")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass
class Profile:
    name: str
    server: str
    method: str
    username: str | None = None
    client_id: str | None = None
    authority: str | None = None
    scopes: list[str] = field(default_factory=list)
    #: a CA bundle to trust for the server and the authority (a private CA), else the system's
    ca_bundle: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError("a profile name is letters, digits, '.', '_' and '-' (at most 64)")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}")

    @property
    def path(self) -> Path:
        return _files.config_dir() / f"{self.name}.json"

    @property
    def tokens_path(self) -> Path:
        return _files.config_dir() / f"{self.name}.tokens.json"

    def save(self) -> None:
        _files.write_private(self.path, json.dumps(asdict(self), indent=2).encode())

    @classmethod
    def load(cls, name: str) -> Profile:
        if not _NAME.fullmatch(name):
            raise ValueError("a profile name is letters, digits, '.', '_' and '-' (at most 64)")
        raw = _files.read_private(_files.config_dir() / f"{name}.json")
        if raw is None:
            raise ClientAuthenticationError(f"no profile {name!r}: sign in first (o16n login SERVER)")
        try:
            return cls(**json.loads(raw))
        except (ValueError, TypeError) as exc:
            raise O16nError(f"the profile {name!r} cannot be read: sign in again (o16n login)") from exc

    def credential(self, *, password: str | None = None, token: str | None = None,
                   client_secret: str | None = None, prompt: Callable[[str], None] | None = None,
                   kept: bool = True) -> Credential:
        """The profile's credential; `kept=False`: in memory only (a sign-in not yet proven)."""
        cache = self.tokens_path if kept else None
        if self.method == "password":
            return PasswordCredential(self.username or "", password, cache_path=cache)
        if self.method == "token":
            return AccessTokenCredential(token) if token is not None else AccessTokenCredential.from_cache(self.tokens_path)
        http_client = TrustingSession(self.ca_bundle) if self.ca_bundle else None
        if self.method == "device-code":
            return DeviceCodeCredential(self.client_id or "", authority=self.authority or "", scopes=self.scopes,
                                        cache_path=cache, prompt=prompt, http_client=http_client)
        return ClientSecretCredential(self.client_id or "", client_secret or os.environ.get("O16N_CLIENT_SECRET"),
                                      authority=self.authority or "", scopes=self.scopes,
                                      cache_path=cache, http_client=http_client)

    def client(self, credential: Credential | None = None) -> O16nClient:
        return O16nClient(self.server, credential if credential is not None else self.credential(),
                          verify=self.ca_bundle or True)

    def forget(self) -> None:
        _files.remove(self.tokens_path)


def entra_scopes(api: str, *, app_only: bool, scope: str = "user_impersonation") -> list[str]:
    """The scopes to ask Entra ID for, given the API's application id or App ID URI."""
    uri = api if "://" in api else f"api://{api}"
    return [f"{uri}/.default"] if app_only else [f"{uri}/{scope}"]
