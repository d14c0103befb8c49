"""Who is calling: o16n's own bearer tokens for local accounts (HS256, one key every instance
shares) and Entra ID access tokens.

Each login starts a token family, one row in storage holding the hash of its one live refresh
token. Access tokens carry the family, its generation and the account's credential version:
a renew bumps the generation (the old pair stops working), a revoke ends the family, reusing a
superseded refresh token ends it too (it may have been stolen), and a removed account or a
changed password ends every token of the account. Instances learn of a renew or revoke made
elsewhere within TOKEN_STATE_TTL_SECONDS; on the instance that made it, at once."""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass

import jwt

from . import accounts, entra, ids, throttle
from .config import ROLES, get_settings
from .errors import BadRequest, Forbidden, NeedsStorage, NotFound, PreconditionFailed, Unauthorized, Unavailable

ISSUER = "o16n"
AUDIENCE = "o16n"
_ALGORITHMS = ["HS256"]
_INVALID_REFRESH = "invalid or expired refresh token"
_GONE = ("this token no longer matches its account (the account was removed, its password changed, or the "
         "signing key was replaced); log in again")
_SPENT_KEPT = 16  # superseded refresh tokens remembered per family, to catch their reuse


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


def login(body: dict, address: str) -> dict:
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        raise BadRequest("send 'username' and 'password' as strings")
    if len(username) > ids.USER_NAME_MAX or len(password) > ids.PASSWORD_MAX:
        raise BadRequest("'username' or 'password' is too long")
    # A fresh instance compares the accounts before anything else it reads or counts: the token's
    # epoch needs that, and while storage stalls, logins at once fail with its one try instead of
    # each queueing for the first use of a table (storage creates tables one at a time).
    accounts.sweep_once()
    attempt = throttle.begin(username, address)
    account = accounts.check_password(username, password)
    if account is None:
        attempt.failed()
        raise Unauthorized("invalid credentials")  # the same for an unknown name and a wrong password
    attempt.succeeded()
    family, secret, now = uuid.uuid4().hex, secrets.token_urlsafe(32), int(time.time())
    cv = accounts.credential_version(account, get_settings().token_signing_key, accounts.epoch(account))
    _families().create(family, {"user": account.name, "generation": 1, "refreshHash": _hash(secret),
                                "spent": "[]", "cv": cv, "chainStart": now, "lastUsed": now, "revoked": False})
    _remember(family, 1, False)
    return _pair(account.name, cv, family, 1, secret, now)


def renew(body: dict) -> dict:
    """A new pair for a valid refresh token; the old pair stops working."""
    family, row, now = _refresh_row(body.get("refreshToken"))
    settings = get_settings()
    account = accounts.find(str(row["user"]))
    if account is None:
        accounts.mark_removed(str(row["user"]))
        raise Unauthorized(_GONE)
    if str(row.get("cv")) not in _credential_versions(account):
        raise Unauthorized(_GONE)
    if now - int(row["chainStart"]) > settings.refresh_chain_lifetime_seconds:
        raise Unauthorized(f"{_INVALID_REFRESH}: the renewal chain is over; log in again")
    secret = secrets.token_urlsafe(32)
    spent = [row["refreshHash"], *_spent(row)][:_SPENT_KEPT]
    cv = accounts.credential_version(account, settings.token_signing_key, accounts.epoch(account))
    row.update(generation=int(row["generation"]) + 1, refreshHash=_hash(secret), spent=json.dumps(spent),
               cv=cv, lastUsed=now)
    try:
        _families().replace(row)
    except PreconditionFailed:
        # Another renew or a revoke of the same token won the race: two holders of one refresh
        # token is what theft looks like, so the login ends for both.
        _revoke_family(family, row)
        raise Unauthorized("this refresh token was used twice at once; every token of its sign-in is now revoked; "
                           "log in again") from None
    _remember(family, row["generation"], False)
    return _pair(account.name, cv, family, row["generation"], secret, now)


def revoke(token: str | None) -> dict:
    family, row, _ = _refresh_row(token)
    _revoke_family(family, row)  # also when a renew got there first: the caller asked to sign out
    return {}


def authenticate(header: str | None, *, cached_only: bool = False) -> Principal:
    """:raises Unauthorized: missing, malformed, expired, rotated or foreign token, or an account
    that changed. :raises Forbidden: an Entra token without an o16n role. :raises NeedsStorage:
    with `cached_only`, when answering needs storage (or Entra's key set)."""
    if not header:
        raise Unauthorized("this call needs an 'Authorization: Bearer <token>' header; get a token from POST /login")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    kind, claims, key = _verified(token, cached_only)
    if kind == "entra":
        return _entra(claims)
    account = accounts.find(str(claims["sub"]))
    if account is None:
        accounts.mark_removed(str(claims["sub"]))
        raise Unauthorized(_GONE)
    if not hmac.compare_digest(str(claims["cv"]), accounts.credential_version(
            account, key, accounts.epoch(account, cached_only=cached_only))):
        raise Unauthorized(_GONE)
    generation, revoked = _family_state(str(claims["fam"]), int(claims["gen"]), cached_only)
    if revoked or generation != claims["gen"]:
        raise Unauthorized("the access token was replaced by a renew or revoked; log in again")
    return Principal(account.name, account.role)


_LEEWAY = 60  # seconds a token is still accepted past its exp (clock skew between machines)
_MAX_VERIFIED = 20_000
_verified_tokens: dict[str, tuple[object, float, str, dict, str]] = {}
_verified_lock = threading.Lock()


def _verified(token: str, cached_only: bool = False) -> tuple[str, dict, str]:
    """("local" or "entra", claims, key) of a token whose signature checked out. A token's
    signature is checked once and remembered until it expires; everything that can change
    (account, role, family, revocation) is still checked on every request by the caller."""
    settings, now = get_settings(), time.time()
    with _verified_lock:
        hit = _verified_tokens.get(token)
    if hit is not None and hit[0] is settings and now <= hit[1]:
        return hit[2], hit[3], hit[4]
    if cached_only:
        raise NeedsStorage()  # a first check may fetch Entra's keys
    # Each issuer has its own key and algorithm; never let one decoder try the other's.
    kind = "local"
    if entra.configured():
        issuer = _issuer(token)
        if issuer != ISSUER:
            if issuer not in entra.issuers():
                raise Unauthorized("the access token is not valid")
            kind = "entra"
    claims, key = (entra.validate(token), "") if kind == "entra" else _decode_local(token)
    with _verified_lock:
        if len(_verified_tokens) >= _MAX_VERIFIED:
            for stale in [t for t, v in _verified_tokens.items() if v[1] < now or v[0] is not settings]:
                del _verified_tokens[stale]
            if len(_verified_tokens) >= _MAX_VERIFIED:
                _verified_tokens.clear()
        _verified_tokens[token] = (settings, float(claims["exp"]) + _LEEWAY, kind, claims, key)
    return kind, claims, key


def _decode_local(token: str) -> tuple[dict, str]:
    """The claims and the key that verified them (the previous key still verifies during a rotation)."""
    s = get_settings()
    for key in filter(None, (s.token_signing_key, s.token_signing_key_previous)):
        try:
            claims = jwt.decode(token, key, algorithms=_ALGORITHMS, audience=AUDIENCE, issuer=ISSUER,
                                leeway=_LEEWAY,
                                options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "fam", "gen", "cv"]})
        except jwt.InvalidSignatureError:
            continue
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the access token has expired; log in again or renew it") from None
        except jwt.PyJWTError:
            raise Unauthorized("the access token is not valid") from None
        return claims, key
    raise Unauthorized("the access token is not valid")


def _entra(claims: dict) -> Principal:
    s = get_settings()
    # ID tokens are signed by the same keys for the same audience; only access tokens name the
    # client they were issued to (azp in v2, appid in v1) and never carry a nonce or hashes.
    if not (claims.get("azp") or claims.get("appid")) or any(k in claims for k in ("nonce", "at_hash", "c_hash")):
        raise Unauthorized("only access tokens are accepted; this looks like an ID token")
    roles = claims.get("roles") if isinstance(claims.get("roles"), list) else []
    delegated = "scp" in claims
    if delegated and s.aad_scope not in str(claims.get("scp") or "").split():
        raise Forbidden(f"the token was not granted the scope '{s.aad_scope}' this API requires")
    role = next((r for r in ROLES if r in roles), None)
    if role is None and delegated and s.aad_default_role != "none":
        role = s.aad_default_role
    if role is None:
        raise Forbidden("the token carries none of o16n's app roles (Owner, Contributor, Reader); "
                        "ask an administrator to assign one")
    return Principal(f"aad:{claims.get('oid') or claims['sub']}", role)


# --- helpers ------------------------------------------------------------------------------

def _issuer(token: str) -> object:
    try:
        return jwt.decode(token, options={"verify_signature": False}).get("iss")
    except jwt.PyJWTError:
        raise Unauthorized("the access token is not valid") from None


def _pair(user: str, cv: str, family: str, generation: int, secret: str, now: int) -> dict:
    settings = get_settings()
    exp = now + settings.access_token_lifetime_seconds
    access = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": user, "iat": now, "nbf": now, "exp": exp,
                         "jti": uuid.uuid4().hex, "fam": family, "gen": generation, "cv": cv},
                        settings.token_signing_key, algorithm="HS256")
    return {"token_type": "Bearer", "access_token": access, "expires_in": settings.access_token_lifetime_seconds,
            "expires_on": exp, "refresh_token": f"{family}.{secret}"}


def _refresh_row(token: object) -> tuple[str, dict, int]:
    if not isinstance(token, str) or not token:
        raise BadRequest("send the refresh token as 'refreshToken'")
    accounts.sweep_once()  # as login does, before reading a sign-in: see there
    family, _, secret = token.partition(".")
    now = int(time.time())
    try:
        row = _families().get(family) if family.isalnum() and len(family) <= 64 else None
    except NotFound:
        row = None
    if row is None or row.get("revoked"):
        raise Unauthorized(_INVALID_REFRESH)
    digest = _hash(secret)
    if not hmac.compare_digest(digest, str(row.get("refreshHash"))):
        if any(hmac.compare_digest(digest, old) for old in _spent(row)):
            _revoke_family(family, row)
            raise Unauthorized("this refresh token was already used once; as it may have been stolen, every "
                               "token of its sign-in is now revoked; log in again")
        raise Unauthorized(_INVALID_REFRESH)
    if now - int(row["lastUsed"]) > get_settings().refresh_token_lifetime_seconds:
        raise Unauthorized(_INVALID_REFRESH)
    return family, row, now


def _revoke_family(family: str, row: dict) -> None:
    """End the family, whatever else changed it meanwhile. Also theft detection (OAuth 2.0
    security BCP): when a superseded refresh token comes back, the family ends for whoever holds
    its live tokens too."""
    for _ in range(10):
        row["revoked"] = True
        try:
            _families().replace(row)
            break
        except PreconditionFailed:
            try:
                row = _families().get(family)
            except NotFound:
                break
    else:
        raise Unavailable("the sign-in could not be revoked; try again")
    _remember(family, int(row["generation"]), True)


def _spent(row: dict) -> list[str]:
    try:
        spent = json.loads(row.get("spent") or "[]")
    except ValueError:
        return []
    return [str(x) for x in spent] if isinstance(spent, list) else []


def _credential_versions(account: accounts.Account) -> set[str]:
    s = get_settings()
    epoch = accounts.epoch(account)
    return {accounts.credential_version(account, k, epoch) for k in (s.token_signing_key, s.token_signing_key_previous)
            if k}


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _families():
    from .storage import tokens  # imported late: token checks alone need no storage client

    return tokens.repository()


_state: dict[str, tuple[float, int, bool]] = {}
_state_lock = threading.Lock()


def _remember(family: str, generation: int, revoked: bool) -> None:
    now = time.monotonic()
    with _state_lock:
        if len(_state) > 100_000:  # many logins: keep only what is still fresh
            ttl = get_settings().token_state_ttl_seconds
            for key in [k for k, v in _state.items() if now - v[0] >= ttl]:
                del _state[key]
        before = _state.get(family)
        if before is not None and before[2]:
            # A revocation is final: a renew that finished after it on this instance (it lost the
            # race, another request revoked the family) must not make it live here again.
            generation, revoked = max(generation, before[1]), True
        _state[family] = (now, generation, revoked)


def _family_state(family: str, seen: int, cached_only: bool = False) -> tuple[int, bool]:
    """The family's generation and revocation, read from storage at most once per TTL, or at
    once when a token shows a newer generation than this instance knows (renewed elsewhere)."""
    with _state_lock:
        hit = _state.get(family)
    if hit and time.monotonic() - hit[0] < get_settings().token_state_ttl_seconds and (hit[2] or hit[1] >= seen):
        return hit[1], hit[2]
    if cached_only:
        raise NeedsStorage()
    try:
        row = _families().get(family)
        generation, revoked = int(row["generation"]), bool(row.get("revoked"))
    except NotFound:
        generation, revoked = -1, True
    _remember(family, generation, revoked)
    return generation, revoked
