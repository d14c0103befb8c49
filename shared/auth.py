"""Local accounts and the bearer tokens o16n issues itself (HS256, one key shared by every
instance), checked on every call but /login."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass

import jwt

from .config import get_settings
from .errors import BadRequest, Unauthorized

ISSUER = "o16n"
AUDIENCE = "o16n"
_ALGORITHMS = ["HS256"]


@dataclass(frozen=True)
class Principal:
    name: str


def check_password(username: str, password: str) -> Principal:
    """:raises Unauthorized: unknown user or wrong password (same message for both)."""
    accounts = get_settings().accounts()
    expected = accounts.get(username, "")
    # Compare even for unknown users so timing does not tell which names exist.
    ok = hmac.compare_digest(expected.encode(), password.encode()) and bool(expected)
    if not ok:
        raise Unauthorized("invalid credentials")
    return Principal(username)


def login(body: dict) -> dict:
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        raise BadRequest("send 'username' and 'password' as strings")
    return issue_tokens(check_password(username, password))


def issue_tokens(user: Principal) -> dict:
    from .storage import tokens  # storage is needed only here; keeps auth importable alone

    settings = get_settings()
    now = int(time.time())
    exp = now + settings.access_token_lifetime_seconds
    access = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": user.name, "iat": now, "nbf": now,
                         "exp": exp, "jti": uuid.uuid4().hex},
                        settings.token_signing_key, algorithm="HS256")
    refresh = secrets.token_urlsafe(32)
    tokens.repository().create(user.name, refresh_hash(refresh),
                               expires_on=now + settings.refresh_token_lifetime_seconds)
    return {"token_type": "Bearer", "access_token": access, "expires_in": settings.access_token_lifetime_seconds,
            "expires_on": exp, "refresh_token": refresh}


def refresh_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def authenticate(header: str | None) -> Principal:
    """:raises Unauthorized: missing, malformed, expired or foreign token."""
    if not header:
        raise Unauthorized("this call needs an 'Authorization: Bearer <token>' header; get a token from POST /login")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    try:
        claims = jwt.decode(token.strip(), get_settings().token_signing_key, algorithms=_ALGORITHMS,
                            audience=AUDIENCE, issuer=ISSUER, leeway=60,
                            options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub"]})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the access token has expired; log in again or renew it") from None
    except jwt.PyJWTError:
        raise Unauthorized("the access token is not valid") from None
    return Principal(claims["sub"])
