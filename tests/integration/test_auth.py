"""Refresh-token lifetimes against real storage: inactivity, the renewal chain, rotation."""
import time

import jwt
import pytest

from shared import auth
from shared.errors import Unauthorized
from tests.conftest import reset_caches
from tests.constants import USERS

pytestmark = pytest.mark.azurite


@pytest.fixture
def short_lifetimes(azurite, monkeypatch):
    def apply(**settings):
        for key, value in settings.items():
            monkeypatch.setenv(key, value)
        reset_caches()
    yield apply
    monkeypatch.undo()
    reset_caches()


def login():
    return auth.login({"username": "alice", "password": USERS["alice"]}, "127.0.0.1")


def test_a_refresh_token_unused_for_its_lifetime_expires(short_lifetimes):
    short_lifetimes(REFRESH_TOKEN_LIFETIME_SECONDS="1")
    pair = login()
    time.sleep(2.1)
    with pytest.raises(Unauthorized, match="invalid or expired refresh token"):
        auth.renew({"refreshToken": pair["refresh_token"]})


def test_the_renewal_chain_ends_and_asks_for_a_new_login(short_lifetimes):
    short_lifetimes(REFRESH_CHAIN_LIFETIME_SECONDS="1")
    pair = auth.renew({"refreshToken": login()["refresh_token"]})
    time.sleep(2.1)
    with pytest.raises(Unauthorized, match="log in again"):
        auth.renew({"refreshToken": pair["refresh_token"]})


def test_access_tokens_last_the_configured_lifetime(short_lifetimes):
    short_lifetimes(ACCESS_TOKEN_LIFETIME_SECONDS="120")
    pair = login()
    assert pair["expires_in"] == 120 and pair["expires_on"] - time.time() == pytest.approx(120, abs=5)
    assert auth.authenticate(f"Bearer {pair['access_token']}").name == "alice"


def test_another_instance_learns_of_a_renew_within_the_token_state_ttl(short_lifetimes):
    short_lifetimes(TOKEN_STATE_TTL_SECONDS="1")
    pair = login()
    assert auth.authenticate(f"Bearer {pair['access_token']}").name == "alice"
    auth.renew({"refreshToken": pair["refresh_token"]})
    auth._state.clear()  # as if the renew had happened on another instance
    auth._remember(pair["refresh_token"].split(".")[0], 1, False)
    assert auth.authenticate(f"Bearer {pair['access_token']}").name == "alice"  # still trusted
    time.sleep(1.2)
    with pytest.raises(Unauthorized):
        auth.authenticate(f"Bearer {pair['access_token']}")


def test_two_renewals_of_one_refresh_token_at_once_end_the_login(azurite):
    import threading

    pair = login()
    barrier, results = threading.Barrier(2), []

    def renew_now():
        barrier.wait()
        try:
            results.append(auth.renew({"refreshToken": pair["refresh_token"]}))
        except Unauthorized as exc:
            results.append(exc)

    threads = [threading.Thread(target=renew_now) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert any(isinstance(r, Unauthorized) for r in results)
    for r in results:
        if isinstance(r, dict):  # the winner's pair ends with the login
            with pytest.raises(Unauthorized):
                auth.authenticate(f"Bearer {r['access_token']}")
            with pytest.raises(Unauthorized):
                auth.renew({"refreshToken": r["refresh_token"]})


def test_a_revoke_that_loses_a_race_with_a_renew_still_ends_the_login(azurite, monkeypatch):
    pair = login()
    read, done = auth._refresh_row, []

    def renewed_meanwhile(token):
        out = read(token)
        if not done:
            done.append(1)
            auth.renew({"refreshToken": pair["refresh_token"]})  # the thief renews between read and write
        return out

    monkeypatch.setattr(auth, "_refresh_row", renewed_meanwhile)
    assert auth.revoke(pair["refresh_token"]) == {}
    monkeypatch.undo()
    family = pair["refresh_token"].split(".")[0]
    assert auth._families().get(family)["revoked"] is True


def test_a_token_signature_is_checked_once_and_revocation_still_applies(azurite, monkeypatch):
    decoded = []
    real = auth.jwt.decode
    monkeypatch.setattr(auth.jwt, "decode", lambda *a, **k: decoded.append(1) or real(*a, **k))
    pair = login()
    bearer = f"Bearer {pair['access_token']}"
    assert auth.authenticate(bearer).name == "alice" and auth.authenticate(bearer).name == "alice"
    assert len(decoded) == 1
    auth.revoke(pair["refresh_token"])
    with pytest.raises(Unauthorized, match="revoked"):
        auth.authenticate(bearer)


def test_a_remembered_token_is_checked_again_once_past_its_expiry(azurite, monkeypatch):
    pair = login()
    bearer = f"Bearer {pair['access_token']}"
    auth.authenticate(bearer)
    decoded, real = [], auth.jwt.decode
    monkeypatch.setattr(auth.jwt, "decode", lambda *a, **k: decoded.append(1) or real(*a, **k))
    later = pair["expires_on"] + 61
    monkeypatch.setattr(auth.time, "time", lambda: later)
    auth.authenticate(bearer)  # PyJWT keeps its own clock: here it only shows the check ran again
    assert len(decoded) == 1


def test_a_token_renewed_on_another_instance_works_here_at_once(azurite):
    pair = login()
    auth.authenticate(f"Bearer {pair['access_token']}")  # this instance now knows generation 1
    renewed = auth.renew({"refreshToken": pair["refresh_token"]})
    auth._remember(pair["refresh_token"].split(".")[0], 1, False)  # as if the renew happened elsewhere
    assert auth.authenticate(f"Bearer {renewed['access_token']}").name == "alice"


def test_a_renew_that_finishes_after_a_revoke_does_not_revive_the_login_here(azurite):
    # the order the race above can take on one instance: the revoke is remembered first
    pair = login()
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    auth._remember(claims["fam"], claims["gen"] + 1, True)
    auth._remember(claims["fam"], claims["gen"] + 1, False)
    assert auth._family_state(claims["fam"], claims["gen"] + 1) == (claims["gen"] + 1, True)
