"""Entra ID (Azure AD) access tokens for this API: RS256, keys from the tenant's JWKS (cached
per process, refetched once on an unknown key id), v1 and v2 issuers, this API's audience."""
from __future__ import annotations

import threading

import jwt

from .config import get_settings
from .errors import Unauthorized

_lock = threading.Lock()
_clients: dict[str, jwt.PyJWKClient] = {}


def configured() -> bool:
    s = get_settings()
    return bool(s.aad_tenant_id and s.aad_audience)


def issuers() -> list[str]:
    tid = get_settings().aad_tenant_id
    return [f"https://login.microsoftonline.com/{tid}/v2.0", f"https://sts.windows.net/{tid}/"]


def validate(token: str) -> dict:
    """The verified claims. :raises Unauthorized:"""
    s = get_settings()
    try:
        key = _jwks().get_signing_key_from_jwt(token).key
        claims = jwt.decode(token, key, algorithms=["RS256"], audience=[a.strip() for a in s.aad_audience.split(",")],
                            issuer=issuers(), leeway=60, options={"require": ["exp", "iat", "nbf", "iss", "aud"]})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the access token has expired") from None
    except (jwt.PyJWTError, jwt.PyJWKClientError):
        raise Unauthorized("the access token is not valid") from None
    if claims.get("tid") != s.aad_tenant_id or not (claims.get("oid") or claims.get("sub")):
        raise Unauthorized("the access token is not valid")
    return claims


def _jwks() -> jwt.PyJWKClient:
    s = get_settings()
    url = s.aad_jwks_url or f"https://login.microsoftonline.com/{s.aad_tenant_id}/discovery/v2.0/keys"
    with _lock:
        if url not in _clients:
            _clients[url] = jwt.PyJWKClient(url, cache_jwk_set=True, lifespan=3600, timeout=10,
                                            cooldown_duration=s.aad_jwks_cooldown_seconds)
        return _clients[url]
