"""Renewing and revoking tokens as ML Server does: a renew rotates both tokens."""
import pytest
import requests

from tests.constants import USERS

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]


def login(base_url, user="alice"):
    r = requests.post(f"{base_url}/login", json={"username": user, "password": USERS[user]})
    assert r.status_code == 200
    return r.json()


def works(base_url, access):
    return requests.get(f"{base_url}/sessions", headers={"Authorization": f"Bearer {access}"}).status_code == 200


def test_renew_gives_a_new_pair_and_the_old_pair_stops_working(base_url):
    old = login(base_url)
    assert works(base_url, old["access_token"])
    r = requests.post(f"{base_url}/login/refreshToken", json={"refreshToken": old["refresh_token"]})
    assert r.status_code == 200
    new = r.json()
    assert new["token_type"] == "Bearer" and new["expires_in"] == 3600
    assert new["refresh_token"] != old["refresh_token"] and new["access_token"] != old["access_token"]
    assert works(base_url, new["access_token"])
    assert not works(base_url, old["access_token"])
    again = requests.post(f"{base_url}/login/refreshToken", json={"refreshToken": old["refresh_token"]})
    assert again.status_code == 401 and "refresh token" in again.json()["message"]


@pytest.mark.parametrize("how", ["query", "body"])  # ML Server's query parameter, or a body that keeps it out of logs
def test_revoke_ends_the_refresh_token_and_its_access_token(base_url, how):
    pair = login(base_url)
    sent = {"params": {"refreshToken": pair["refresh_token"]}} if how == "query" else \
        {"json": {"refreshToken": pair["refresh_token"]}}
    r = requests.delete(f"{base_url}/login/refreshToken", **sent)
    assert r.status_code == 200
    assert not works(base_url, pair["access_token"])
    r = requests.post(f"{base_url}/login/refreshToken", json={"refreshToken": pair["refresh_token"]})
    assert r.status_code == 401
    assert requests.delete(f"{base_url}/login/refreshToken",
                           params={"refreshToken": pair["refresh_token"]}).status_code == 401


def test_a_revoke_without_a_refresh_token_is_refused(base_url):
    for sent in ({}, {"json": {}}, {"json": {"refreshToken": ""}}, {"data": "[]", "headers": {"Content-Type": "application/json"}}):
        r = requests.delete(f"{base_url}/login/refreshToken", **sent)
        assert r.status_code == 400 and r.json()["message"], (sent, r.text)


def test_other_logins_are_untouched_by_a_revoke(base_url):
    a, b = login(base_url), login(base_url)
    requests.delete(f"{base_url}/login/refreshToken", params={"refreshToken": a["refresh_token"]})
    assert works(base_url, b["access_token"])


@pytest.mark.parametrize("token", ["", "nonsense", "abc.def", "0" * 32 + ".x"])
def test_unknown_refresh_tokens_are_refused(base_url, token):
    r = requests.post(f"{base_url}/login/refreshToken", json={"refreshToken": token})
    assert r.status_code in (400, 401)
    assert "Traceback" not in r.text
