"""Local accounts and the bearer tokens o16n issues itself: HS256 access tokens signed with
one key that every instance shares, and rotating refresh tokens stored by hash.

Each login starts a token family. Access tokens carry the family and its generation; a renew
bumps the generation (the old pair stops working), a revoke ends the family. Instances learn
of a renew or revoke made elsewhere within TOKEN_STATE_TTL_SECONDS; on the instance that made
it, at once."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import uuid
from dataclasses import dataclass

import jwt

from . import entra
from .config import ROLES, get_settings
from .errors import BadRequest, Forbidden, NotFound, PreconditionFailed, Unauthorized

ISSUER = "o16n"
AUDIENCE = "o16n"
_ALGORITHMS = ["HS256"]
_INVALID_REFRESH = "invalid or expired refresh token"


@dataclass(frozen=True)
class Principal:
    name: str
    #: ML Server's role: Owner may change any service, Contributor its own, Reader none
    role: str = "Contributor"

    @property
    def owner(self) -> bool:
        return self.role == "Owner"

    @property
    def reader(self) -> bool:
        return self.role == "Reader"


def check_password(username: str, password: str) -> Principal:
    """:raises Unauthorized: unknown user or wrong password (same message for both)."""
    expected = get_settings().accounts().get(username, "")
    # Compare even for unknown users so timing does not tell which names exist.
    ok = hmac.compare_digest(expected.encode(), password.encode()) and bool(expected)
    if not ok:
        raise Unauthorized("invalid credentials")
    return _local(username)


def _local(name: str) -> Principal:
    # Read per request, so a changed role applies to tokens already issued.
    return Principal(name, get_settings().roles().get(name, "Contributor"))


def _entra(claims: dict) -> Principal:
    granted = set(claims.get("roles") or [])
    role = next((r for r in ROLES if r in granted), get_settings().aad_default_role)
    if role == "none":
        raise Forbidden("this account has no o16n role (Owner, Contributor or Reader)")
    return Principal(f"aad:{claims.get('oid') or claims['sub']}", role)


def login(body: dict) -> dict:
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        raise BadRequest("send 'username' and 'password' as strings")
    user = check_password(username, password)
    family, secret, now = uuid.uuid4().hex, secrets.token_urlsafe(32), int(time.time())
    _families().create(family, {"user": user.name, "generation": 1, "refreshHash": _hash(secret),
                                "chainStart": now, "lastUsed": now, "revoked": False})
    _remember(family, 1, False)
    return _pair(user.name, family, 1, secret, now)


def renew(body: dict) -> dict:
    """A new pair for a valid refresh token; the old pair stops working."""
    family, row, now = _refresh_row(body.get("refreshToken"))
    settings = get_settings()
    if now - int(row["chainStart"]) > settings.refresh_chain_lifetime_seconds:
        raise Unauthorized(f"{_INVALID_REFRESH}: the renewal chain is over; log in again")
    secret = secrets.token_urlsafe(32)
    row.update(generation=int(row["generation"]) + 1, refreshHash=_hash(secret), lastUsed=now)
    try:
        _families().replace(row)
    except PreconditionFailed:
        raise Unauthorized(_INVALID_REFRESH) from None  # a concurrent renew or revoke won
    _remember(family, row["generation"], False)
    return _pair(row["user"], family, row["generation"], secret, now)


def revoke(token: str | None) -> dict:
    family, row, _ = _refresh_row(token)
    row["revoked"] = True
    try:
        _families().replace(row)
    except PreconditionFailed:
        raise Unauthorized(_INVALID_REFRESH) from None
    _remember(family, row["generation"], True)
    return {}


def authenticate(header: str | None) -> Principal:
    """:raises Unauthorized: missing, malformed, expired, rotated or foreign token."""
    if not header:
        raise Unauthorized("this call needs an 'Authorization: Bearer <token>' header; get a token from POST /login")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    # Each issuer has its own key and algorithm; never let one decoder try the other's.
    if entra.configured():
        issuer = _issuer(token)
        if issuer != ISSUER:
            if issuer not in entra.issuers():
                raise Unauthorized("the access token is not valid")
            return _entra(entra.validate(token))
    try:
        claims = jwt.decode(token, get_settings().token_signing_key, algorithms=_ALGORITHMS,
                            audience=AUDIENCE, issuer=ISSUER, leeway=60,
                            options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub"]})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the access token has expired; log in again or renew it") from None
    except jwt.PyJWTError:
        raise Unauthorized("the access token is not valid") from None
    if "fam" in claims:
        generation, revoked = _family_state(str(claims["fam"]))
        if revoked or generation != claims.get("gen"):
            raise Unauthorized("the access token was replaced by a renew or revoked; log in again") from None
    return _local(claims["sub"])


# --- helpers ------------------------------------------------------------------------------

def _issuer(token: str) -> object:
    try:
        return jwt.decode(token, options={"verify_signature": False}).get("iss")
    except jwt.PyJWTError:
        raise Unauthorized("the access token is not valid") from None


def _pair(user: str, family: str, generation: int, secret: str, now: int) -> dict:
    settings = get_settings()
    exp = now + settings.access_token_lifetime_seconds
    access = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": user, "iat": now, "nbf": now, "exp": exp,
                         "jti": uuid.uuid4().hex, "fam": family, "gen": generation},
                        settings.token_signing_key, algorithm="HS256")
    return {"token_type": "Bearer", "access_token": access, "expires_in": settings.access_token_lifetime_seconds,
            "expires_on": exp, "refresh_token": f"{family}.{secret}"}


def _refresh_row(token: object) -> tuple[str, dict, int]:
    if not isinstance(token, str) or not token:
        raise BadRequest("send the refresh token as 'refreshToken'")
    family, _, secret = token.partition(".")
    now = int(time.time())
    try:
        row = _families().get(family) if family.isalnum() else None
    except NotFound:
        row = None
    if (row is None or row.get("revoked") or not hmac.compare_digest(_hash(secret), str(row.get("refreshHash")))
            or now - int(row["lastUsed"]) > get_settings().refresh_token_lifetime_seconds):
        raise Unauthorized(_INVALID_REFRESH)
    return family, row, now


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _families():
    from .storage import tokens  # imported late: token checks alone need no storage client

    return tokens.repository()


_state: dict[str, tuple[float, int, bool]] = {}
_state_lock = threading.Lock()


def _remember(family: str, generation: int, revoked: bool) -> None:
    with _state_lock:
        _state[family] = (time.monotonic(), generation, revoked)


def _family_state(family: str) -> tuple[int, bool]:
    """The family's generation and revocation, read from storage at most once per TTL."""
    with _state_lock:
        hit = _state.get(family)
    if hit and time.monotonic() - hit[0] < get_settings().token_state_ttl_seconds:
        return hit[1], hit[2]
    try:
        row = _families().get(family)
        generation, revoked = int(row["generation"]), bool(row.get("revoked"))
    except NotFound:
        generation, revoked = -1, True
    _remember(family, generation, revoked)
    return generation, revoked
