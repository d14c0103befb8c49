"""Entra ID tokens, signed by a local RSA key whose JWKS a loopback server publishes."""
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared import auth, entra
from shared.config import get_settings
from shared.errors import Forbidden, Unauthorized

TENANT = str(uuid.uuid4())
API = str(uuid.uuid4())


class Keys:
    def __init__(self):
        self.keys = {}
        self.fetches = 0

    def add(self):
        kid = uuid.uuid4().hex
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return kid

    def jwks(self):
        out = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            out.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": out}


def serve_jwks(store: Keys) -> ThreadingHTTPServer:
    """A loopback server publishing `store`'s keys as the tenant's JWKS (counting fetches)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            store.fetches += 1
            body = json.dumps(store.jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def keys(monkeypatch):
    store = Keys()
    server = serve_jwks(store)
    monkeypatch.setenv("AAD_TENANT_ID", TENANT)
    monkeypatch.setenv("AAD_AUDIENCE", f"{API},api://{API}")
    monkeypatch.setenv("AAD_JWKS_URL", f"http://127.0.0.1:{server.server_port}/keys")
    monkeypatch.setenv("AAD_JWKS_COOLDOWN_SECONDS", "0.5")
    get_settings.cache_clear()
    entra._clients.clear()
    yield store
    server.shutdown()
    monkeypatch.undo()
    get_settings.cache_clear()
    entra._clients.clear()


def token(keys, kid, *, kid_header=None, **overrides):
    """A v2 delegated access token, as Entra issues one to a client app for a user with a role."""
    now = int(time.time())
    claims = {"iss": f"https://login.microsoftonline.com/{TENANT}/v2.0", "aud": API, "tid": TENANT,
              "oid": "1111-oid", "sub": "pairwise", "iat": now, "nbf": now, "exp": now + 600, "ver": "2.0",
              "azp": "client-app-id", "scp": "user_impersonation", "roles": ["Contributor"], **overrides}
    claims = {k: v for k, v in claims.items() if v is not None}
    return "Bearer " + jwt.encode(claims, keys.keys[kid], algorithm="RS256", headers={"kid": kid_header or kid})


def test_a_valid_v2_token_names_the_caller_by_object_id(keys):
    kid = keys.add()
    user = auth.authenticate(token(keys, kid))
    assert user.name == "aad:1111-oid" and user.owner is False


def test_v1_tokens_with_the_app_id_uri_audience_are_accepted(keys):
    kid = keys.add()
    user = auth.authenticate(token(keys, kid, iss=f"https://sts.windows.net/{TENANT}/", aud=f"api://{API}",
                                   ver="1.0", azp=None, appid="client-app-id"))
    assert user.name == "aad:1111-oid"


def test_app_roles_map_to_ml_server_roles_and_the_highest_wins(keys):
    kid = keys.add()
    assert auth.authenticate(token(keys, kid, roles=["Owner"])).owner is True
    assert auth.authenticate(token(keys, kid, roles=["Reader", "Contributor"])).role == "Contributor"
    assert auth.authenticate(token(keys, kid, roles=["Reader"])).reader is True


def test_an_app_only_token_needs_an_app_role(keys):
    kid = keys.add()
    assert auth.authenticate(token(keys, kid, scp=None, roles=["Reader"])).reader is True
    with pytest.raises(Forbidden, match="app roles"):
        auth.authenticate(token(keys, kid, scp=None, roles=None))


def test_without_a_role_a_delegated_token_is_refused_unless_a_default_role_is_set(keys, monkeypatch):
    kid = keys.add()
    with pytest.raises(Forbidden, match="app roles"):  # AAD_DEFAULT_ROLE is none by default
        auth.authenticate(token(keys, kid, roles=None))
    with pytest.raises(Forbidden):
        auth.authenticate(token(keys, kid, roles=["Administrator", "Writer"]))
    monkeypatch.setenv("AAD_DEFAULT_ROLE", "Reader")
    get_settings.cache_clear()
    assert auth.authenticate(token(keys, kid, roles=None)).reader is True


@pytest.mark.parametrize("scp", ["", "User.Read", "user_impersonation_x other"])
def test_a_delegated_token_without_the_api_scope_is_refused_even_with_a_role(keys, scp):
    kid = keys.add()
    with pytest.raises(Forbidden, match="user_impersonation"):
        auth.authenticate(token(keys, kid, scp=scp, roles=["Owner"]))


@pytest.mark.parametrize("overrides", [
    {"azp": None, "scp": None},  # an ID token names no client it was issued to
    {"nonce": "n-0S6_WzA2Mj"}, {"at_hash": "77QmUPtjPfzWtF2AnpK9RQ"}, {"c_hash": "LDktKdoQak3Pk0cnXxCltA"},
])
def test_id_tokens_are_refused_even_for_this_audience_with_a_role(keys, overrides):
    kid = keys.add()
    with pytest.raises(Unauthorized, match="ID token"):
        auth.authenticate(token(keys, kid, **overrides))


@pytest.mark.parametrize("overrides", [
    {"aud": "api://someone-else"}, {"iss": "https://login.microsoftonline.com/other-tenant/v2.0"},
    {"tid": "other-tenant"}, {"exp": -300}, {"exp": None}, {"nbf": 600},
])
def test_tokens_for_another_audience_tenant_or_time_are_refused(keys, overrides):
    # times are offsets from now, taken when the test runs (a long session outlasts a fixed time)
    overrides = {k: int(time.time()) + v if k in ("exp", "nbf") and v is not None else v for k, v in overrides.items()}
    kid = keys.add()
    with pytest.raises(Unauthorized):
        auth.authenticate(token(keys, kid, **overrides))


def test_a_token_signed_by_an_unknown_key_is_refused(keys):
    keys.add()
    stranger = Keys()
    kid = stranger.add()
    with pytest.raises(Unauthorized):
        auth.authenticate(token(stranger, kid))


def test_alg_none_and_hs256_with_the_public_key_are_refused(keys):
    kid = keys.add()
    now = int(time.time())
    claims = {"iss": f"https://login.microsoftonline.com/{TENANT}/v2.0", "aud": API, "tid": TENANT, "oid": "x",
              "iat": now, "nbf": now, "exp": now + 600, "azp": "client-app-id", "roles": ["Owner"]}
    none = jwt.encode(claims, None, algorithm="none", headers={"kid": kid})
    with pytest.raises(Unauthorized):
        auth.authenticate(f"Bearer {none}")
    pem = keys.keys[kid].public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    forged = jwt.api_jws.PyJWS().encode(json.dumps(claims).encode(), key=b"x" * 32, algorithm="HS256",
                                        headers={"kid": kid})
    with pytest.raises(Unauthorized):
        auth.authenticate(f"Bearer {forged}")
    assert pem  # the key exists; the HS256 token above used a different secret but the same kid


def test_a_rotated_signing_key_is_fetched_once_and_unknown_kids_do_not_flood_the_endpoint(keys):
    first = keys.add()
    stranger = Keys()
    kid = stranger.add()
    spam = [token(stranger, kid, kid_header=uuid.uuid4().hex) for _ in range(20)]
    auth.authenticate(token(keys, first))
    fetched = keys.fetches
    for bearer in spam:  # unknown kids within the cooldown: refused without a fetch each
        with pytest.raises(Unauthorized):
            auth.authenticate(bearer)
    assert keys.fetches == fetched
    time.sleep(0.6)  # AAD_JWKS_COOLDOWN_SECONDS in this test
    second = keys.add()
    auth.authenticate(token(keys, second))
    assert keys.fetches == fetched + 1
    auth.authenticate(token(keys, second))
    assert keys.fetches == fetched + 1


def test_without_entra_settings_entra_tokens_are_refused(monkeypatch):
    monkeypatch.delenv("AAD_TENANT_ID", raising=False)
    get_settings.cache_clear()
    store = Keys()
    kid = store.add()
    with pytest.raises(Unauthorized):
        auth.authenticate(token(store, kid))
    get_settings.cache_clear()
