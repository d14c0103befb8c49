"""The loopback OIDC provider, driven by the real msal library: device code flow, silent refresh,
client credentials; and its tokens accepted by a real o16n local host."""
import threading
import time

import jwt
import msal
import pytest
import requests

from tests.client.conftest import API, CAROL, CI, CI_SECRET, CLI, DAVE, TENANT

USER_SCOPES, APP_SCOPES = [f"api://{API}/user_impersonation"], [f"api://{API}/.default"]
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@pytest.fixture
def http(provider):
    """A session trusting the test CA. trust_env=False because requests lets REQUESTS_CA_BUNDLE
    (set to the system bundle on many machines) override a session's own `verify`."""
    s = requests.Session()
    s.trust_env, s.verify = False, provider.ca_file
    yield s
    s.close()


def public_app(provider, http, cache=None):
    return msal.PublicClientApplication(CLI, authority=provider.authority, instance_discovery=False,
                                        token_cache=cache or msal.TokenCache(), http_client=http)


def ci_app(provider, http, secret=CI_SECRET):
    return msal.ConfidentialClientApplication(CI, client_credential=secret, authority=provider.authority,
                                              instance_discovery=False, http_client=http)


def device_login(provider, app, user, *, decide=None):
    """As a person at a browser: `decide` (default approve) once msal has polled at least once."""
    flow = app.initiate_device_flow(scopes=USER_SCOPES)
    assert "user_code" in flow, flow

    def person():
        while not any(r.get("device_code") == flow["device_code"] for r in list(provider.token_requests)):
            time.sleep(0.05)
        (decide or (lambda code: provider.approve(code, user)))(flow["user_code"])

    threading.Thread(target=person, daemon=True).start()
    return flow, app.acquire_token_by_device_flow(flow)  # blocks, polling every `interval` s


def verified(provider, token):
    """The claims, checked as o16n's server checks them: key from the plain-http JWKS."""
    key = jwt.PyJWKClient(provider.jwks_url).get_signing_key_from_jwt(token).key
    return jwt.decode(token, key, algorithms=["RS256"], audience=API,
                      issuer=f"https://login.microsoftonline.com/{TENANT}/v2.0")


def test_device_flow_signs_a_user_in_after_polling(provider, http):
    app = public_app(provider, http)
    flow, result = device_login(provider, app, CAROL)
    assert flow["message"].startswith("To sign in, use a web browser to open the page https://localhost:")
    assert flow["user_code"] in flow["message"] and flow["interval"] == 1
    assert "access_token" in result and "refresh_token" in result, result
    polls = [r for r in provider.token_requests if r.get("device_code") == flow["device_code"]]
    assert len(polls) >= 2 and polls[0]["grant_type"] == DEVICE_GRANT  # the first one was pending
    claims = verified(provider, result["access_token"])
    assert claims["scp"] == "user_impersonation" and claims["roles"] == ["Contributor"]
    assert claims["azp"] == CLI and claims["tid"] == TENANT and claims["oid"] == provider.users[CAROL]["oid"]
    assert result["id_token_claims"]["aud"] == CLI
    [account] = app.get_accounts()  # named from the ID token, keyed by client_info
    assert account["username"] == CAROL and account["home_account_id"] == f"{claims['oid']}.{TENANT}"
    # A token with an hour left comes from msal's cache: no request.
    n = len(provider.token_requests)
    again = app.acquire_token_silent(USER_SCOPES, account)
    assert again["token_source"] == "cache" and len(provider.token_requests) == n


def test_silent_refresh_rotates_the_refresh_token_until_revoked(provider, http, monkeypatch):
    monkeypatch.setattr(provider, "token_lifetime", 60)  # msal refreshes tokens with < 5 min left
    cache = msal.TokenCache()
    app = public_app(provider, http, cache)
    _, first = device_login(provider, app, CAROL)
    [account] = app.get_accounts()
    for _ in range(2):  # the second refresh works only if msal kept the rotated refresh token
        result = app.acquire_token_silent(USER_SCOPES, account)
        assert result and result["token_source"] == "identity_provider", result
        last = provider.token_requests[-1]
        assert last["grant_type"] == "refresh_token" and USER_SCOPES[0] in last["scope"].split()
        assert verified(provider, result["access_token"])["roles"] == ["Contributor"]
    [rt] = cache.search(msal.TokenCache.CredentialType.REFRESH_TOKEN)
    assert rt["secret"] != first["refresh_token"]
    provider.revoke_refresh_tokens()
    assert app.acquire_token_silent(USER_SCOPES, account) is None
    assert app.acquire_token_silent_with_error(USER_SCOPES, account)["error"] == "invalid_grant"


def test_a_declined_or_expired_device_code(provider, http, monkeypatch):
    _, result = device_login(provider, public_app(provider, http), CAROL, decide=provider.deny)
    assert result["error"] == "authorization_declined"
    monkeypatch.setattr(provider, "device_code_lifetime", 1)
    app = public_app(provider, http)
    flow = app.initiate_device_flow(scopes=USER_SCOPES)
    time.sleep(1.2)
    assert app.acquire_token_by_device_flow(flow)["error"] == "expired_token"


def test_client_credentials_get_an_app_only_token(provider, http):
    app = ci_app(provider, http)
    result = app.acquire_token_for_client(APP_SCOPES)
    assert "access_token" in result and "refresh_token" not in result, result
    claims = verified(provider, result["access_token"])
    assert claims["roles"] == ["Reader"] and "scp" not in claims and claims["azp"] == CI
    assert provider.token_requests[-1]["grant_type"] == "client_credentials"
    assert provider.token_requests[-1]["client_secret"] == CI_SECRET  # msal posts it in the form
    assert app.acquire_token_for_client(APP_SCOPES)["token_source"] == "cache"


def test_refusals_come_back_as_msal_error_dicts(provider, http):
    assert ci_app(provider, http, secret="wrong").acquire_token_for_client(APP_SCOPES)["error"] == "invalid_client"
    assert ci_app(provider, http).acquire_token_for_client(USER_SCOPES)["error"] == "invalid_scope"
    flow = public_app(provider, http).initiate_device_flow(scopes=["api://another-api/user_impersonation"])
    assert flow["error"] == "invalid_scope" and "user_code" not in flow


def test_trust_through_requests_ca_bundle(provider, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", provider.ca_file)  # msal's default requests.Session reads it
    assert "access_token" in msal.ConfidentialClientApplication(
        CI, client_credential=CI_SECRET, authority=provider.authority,
        instance_discovery=False).acquire_token_for_client(APP_SCOPES)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())  # a bundle without the test CA
    with pytest.raises(requests.exceptions.SSLError):
        msal.PublicClientApplication(CLI, authority=provider.authority, instance_discovery=False)


@pytest.mark.azurite
@pytest.mark.e2e
def test_the_tokens_are_accepted_by_an_o16n_host(entra_host, provider, http):
    def services(token):
        return requests.get(f"{entra_host}/services", headers={"Authorization": f"Bearer {token}"}, timeout=30)

    _, carol = device_login(provider, public_app(provider, http), CAROL)
    assert services(carol["access_token"]).status_code == 200
    _, dave = device_login(provider, public_app(provider, http), DAVE)  # a user without an app role
    r = services(dave["access_token"])
    assert r.status_code == 403 and "app roles" in r.json()["message"], r.text
    app = ci_app(provider, http).acquire_token_for_client(APP_SCOPES)
    assert services(app["access_token"]).status_code == 200
