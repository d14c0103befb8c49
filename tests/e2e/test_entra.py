"""Entra ID access tokens over real HTTP, signed by keys generated here and published by a
loopback JWKS server: only access tokens, only with an o16n app role or the API's scope."""
import time
import uuid

import jwt
import pytest
import requests

from tests.e2e.conftest import start_host, stop_host
from tests.unit.test_entra import API, TENANT, Keys, serve_jwks

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]


@pytest.fixture(scope="module")
def entra(azurite):
    keys = Keys()
    kid = keys.add()
    server = serve_jwks(keys)
    proc, url = start_host(SPARE_WORKERS="0", AAD_TENANT_ID=TENANT, AAD_AUDIENCE=f"{API},api://{API}",
                           AAD_JWKS_URL=f"http://127.0.0.1:{server.server_port}/keys")

    def call(method="GET", path="/services", **claims):
        now = int(time.time())
        body = {"iss": f"https://login.microsoftonline.com/{TENANT}/v2.0", "aud": API, "tid": TENANT,
                "oid": "e2e-oid", "sub": "pairwise", "iat": now, "nbf": now, "exp": now + 600, "ver": "2.0",
                "azp": "client-app-id", "scp": "user_impersonation", "roles": ["Contributor"], **claims}
        body = {k: v for k, v in body.items() if v is not None}
        token = jwt.encode(body, keys.keys[kid], algorithm="RS256", headers={"kid": kid})
        extra = {"json": {"code": "y = 1", "runtimeType": "Python"}} if method == "POST" else {}
        return requests.request(method, url + path, headers={"Authorization": f"Bearer {token}"}, **extra)

    yield call
    stop_host(proc)
    server.shutdown()


def test_a_delegated_token_with_a_role_and_the_scope_is_accepted(entra):
    assert entra().status_code == 200
    r = entra("POST", f"/services/entra{uuid.uuid4().hex[:6]}/v1")
    assert r.status_code == 201, r.text


def test_an_app_only_token_with_an_app_role_is_accepted(entra):
    assert entra(scp=None, roles=["Reader"]).status_code == 200
    assert entra("POST", f"/services/entra{uuid.uuid4().hex[:6]}/v1", scp=None, roles=["Reader"]).status_code == 403


@pytest.mark.parametrize("claims, status, fragment", [
    ({"roles": None}, 403, "app roles"),                        # a user of the tenant without a role
    ({"scp": None, "roles": None}, 403, "app roles"),           # an app without a role
    ({"roles": ["Admin"]}, 403, "app roles"),                   # roles of some other app
    ({"scp": "User.Read"}, 403, "user_impersonation"),          # a token for another permission
    ({"azp": None, "scp": None, "nonce": "abc"}, 401, "ID token"),  # an ID token for this app
    ({"at_hash": "x"}, 401, "ID token"),
    ({"aud": "api://another-api"}, 401, "not valid"),
    ({"tid": str(uuid.uuid4())}, 401, "not valid"),
])
def test_each_refusal(entra, claims, status, fragment):
    r = entra(**claims)
    assert r.status_code == status and fragment in r.json()["message"], r.text
    if status == 401:
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
