"""Accounts, tokens and names that cannot be abused, over real HTTP: tokens follow the account
as the settings define it now, lock-outs, theft detection on refresh reuse, key rotation."""
import os
import time
import uuid

import pytest
import requests

from tests.constants import ADMIN_PASSWORD, TEST_ENV, USERS
from tests.e2e.conftest import start_host, stop_host
from tests.e2e.helpers import execute, new_session, snapshot

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]


def login(url, user, password=None, **extra):
    return requests.post(f"{url}/login", json={"username": user, "password": password or USERS.get(user, ADMIN_PASSWORD)},
                         **extra)


def bearer(pair):
    return {"Authorization": f"Bearer {pair['access_token']}"}


def renew(url, refresh):
    return requests.post(f"{url}/login/refreshToken", json={"refreshToken": refresh})


@pytest.fixture
def host(azurite):
    """Start hosts with extra settings on the same storage (as a restart with new settings would)."""
    started = []

    def start(**settings):
        if "LOCAL_USERS" in settings:
            settings.setdefault("LOCAL_ROLES", "")  # the default names rita, who may not be an account here
        proc, url = start_host(SPARE_WORKERS="0", **settings)
        started.append(proc)
        return url

    yield start
    for proc in started:
        stop_host(proc)


def fresh_storage() -> str:
    """A storage prefix of its own, so lock-outs tried here touch no other test's logins."""
    return "t" + uuid.uuid4().hex[:10]


# --- tokens follow the account as it is now ------------------------------------------------

def test_removing_an_account_or_changing_its_password_ends_its_tokens_at_once(base_url, host):
    users = {"carol": "carol-password-1", "dave": "dave-password-1"}
    prefix = fresh_storage()
    original = ";".join(f"{u}:{p}" for u, p in users.items())
    before = host(STORAGE_PREFIX=prefix, LOCAL_USERS=original)
    carol, dave = login(before, "carol", users["carol"]).json(), login(before, "dave", users["dave"]).json()
    assert requests.get(f"{before}/sessions", headers=bearer(dave)).status_code == 200
    # The same storage, restarted without dave and with carol's password changed.
    after = host(STORAGE_PREFIX=prefix, LOCAL_USERS="carol:carol-password-2")
    for pair in (carol, dave):
        r = requests.get(f"{after}/sessions", headers=bearer(pair))
        assert r.status_code == 401 and "no longer matches its account" in r.json()["message"]
        r = renew(after, pair["refresh_token"])
        assert r.status_code == 401 and "no longer matches its account" in r.json()["message"]
        r = requests.post(f"{after}/services/gone{uuid.uuid4().hex[:6]}/v1", headers=bearer(pair),
                          json={"code": "x = 1", "runtimeType": "Python"})
        assert r.status_code == 401
    assert login(after, "carol", "carol-password-1").status_code == 401
    assert login(after, "dave", users["dave"]).status_code == 401
    fresh = login(after, "carol", "carol-password-2").json()
    assert requests.get(f"{after}/sessions", headers=bearer(fresh)).status_code == 200
    # The old settings come back (a rolled-back password, a suspended account restored): the
    # tokens refused once stay refused; logging in again works.
    restored = host(STORAGE_PREFIX=prefix, LOCAL_USERS=original)
    for pair in (carol, dave):
        assert requests.get(f"{restored}/sessions", headers=bearer(pair)).status_code == 401
        assert renew(restored, pair["refresh_token"]).status_code == 401
    assert requests.get(f"{restored}/sessions", headers=bearer(login(restored, "dave", users["dave"]).json())).status_code == 200


def test_a_removed_accounts_token_stays_refused_when_it_comes_back_even_if_nothing_else_ran(host):
    prefix, users = fresh_storage(), "kim:kim-password-12"
    pair = login(host(STORAGE_PREFIX=prefix, LOCAL_USERS=users), "kim", "kim-password-12").json()
    without = host(STORAGE_PREFIX=prefix, LOCAL_USERS="other:other-password-1")
    assert requests.get(f"{without}/sessions", headers=bearer(pair)).status_code == 401
    back = host(STORAGE_PREFIX=prefix, LOCAL_USERS=users)
    assert requests.get(f"{back}/sessions", headers=bearer(pair)).status_code == 401
    assert renew(back, pair["refresh_token"]).status_code == 401


def test_rolling_back_a_changed_password_does_not_revive_old_tokens(host):
    prefix = fresh_storage()
    original = "lena:lena-password-1;omar:omar-password-1"
    pair = login(host(STORAGE_PREFIX=prefix, LOCAL_USERS=original), "lena", "lena-password-1").json()
    changed = host(STORAGE_PREFIX=prefix, LOCAL_USERS="lena:lena-password-2;omar:omar-password-1")
    assert login(changed, "omar", "omar-password-1").status_code == 200  # only someone else signs in
    back = host(STORAGE_PREFIX=prefix, LOCAL_USERS=original)
    assert requests.get(f"{back}/sessions", headers=bearer(pair)).status_code == 401
    assert renew(back, pair["refresh_token"]).status_code == 401
    assert login(back, "lena", "lena-password-1").status_code == 200


def test_a_hashed_password_in_the_settings_works_and_the_plain_one_is_nowhere(host):
    from shared.passwords import hash_password

    url = host(STORAGE_PREFIX=fresh_storage(), LOCAL_USERS=f"erin:{hash_password('erin-password-1')}",
               LOCAL_ADMIN_PASSWORD=hash_password("admin-pw-12345"))
    assert login(url, "erin", "erin-password-1").status_code == 200
    assert login(url, "admin", "admin-pw-12345").status_code == 200
    assert login(url, "erin", "scrypt$15$8$1$").status_code == 401  # the hash itself is no password


def test_a_token_without_a_family_or_credential_version_is_refused(base_url):
    import jwt

    now = int(time.time())
    legacy = jwt.encode({"iss": "o16n", "aud": "o16n", "sub": "alice", "iat": now, "nbf": now, "exp": now + 600},
                        TEST_ENV["TOKEN_SIGNING_KEY"], algorithm="HS256")
    r = requests.get(f"{base_url}/sessions", headers={"Authorization": f"Bearer {legacy}"})
    assert r.status_code == 401


# --- refresh tokens: reuse is theft -------------------------------------------------------

def test_reusing_a_superseded_refresh_token_revokes_the_whole_family(base_url):
    first = login(base_url, "alice").json()
    second = renew(base_url, first["refresh_token"]).json()
    assert requests.get(f"{base_url}/sessions", headers=bearer(second)).status_code == 200
    other_login = login(base_url, "alice").json()
    r = renew(base_url, first["refresh_token"])  # the stolen, already used token comes back
    assert r.status_code == 401 and "already used" in r.json()["message"]
    assert requests.get(f"{base_url}/sessions", headers=bearer(second)).status_code == 401
    assert renew(base_url, second["refresh_token"]).status_code == 401
    # Another login of the same user is another family: untouched.
    assert requests.get(f"{base_url}/sessions", headers=bearer(other_login)).status_code == 200


def test_a_guessed_refresh_secret_does_not_revoke_the_family(base_url):
    pair = login(base_url, "alice").json()
    family = pair["refresh_token"].split(".")[0]
    assert renew(base_url, f"{family}.not-the-secret").status_code == 401
    assert requests.get(f"{base_url}/sessions", headers=bearer(pair)).status_code == 200
    assert renew(base_url, pair["refresh_token"]).status_code == 200


# --- /login throttling ----------------------------------------------------------------------

def test_ten_failures_lock_the_name_even_for_the_right_password_until_the_lock_ends(host):
    url = host(STORAGE_PREFIX=fresh_storage(), LOCAL_USERS="frank:frank-password-1", LOGIN_LOCKOUT_SECONDS="4")
    wrong = [login(url, "frank", f"wrong-password-{i}") for i in range(10)]
    unknown = login(url, "nobody-here", "wrong-password-x")
    assert {r.status_code for r in wrong} == {401} and unknown.status_code == 401
    # An unknown name and a wrong password look the same.
    strip = ("correlationId",)
    assert ({k: v for k, v in wrong[0].json().items() if k not in strip}
            == {k: v for k, v in unknown.json().items() if k not in strip})
    locked = login(url, "frank", "frank-password-1")
    assert locked.status_code == 429 and 1 <= int(locked.headers["Retry-After"]) <= 4
    assert "too many failed logins" in locked.json()["message"]
    time.sleep(int(locked.headers["Retry-After"]) + 0.2)
    assert login(url, "frank", "frank-password-1").status_code == 200


def test_a_failure_after_a_lock_locks_again_for_twice_as_long(host):
    url = host(STORAGE_PREFIX=fresh_storage(), LOCAL_USERS="gina:gina-password-1", LOGIN_LOCKOUT_SECONDS="3",
               LOGIN_MAX_FAILURES="3")
    for i in range(3):
        assert login(url, "gina", f"wrong-{i}-password").status_code == 401
    first = login(url, "gina", "gina-password-1")
    assert first.status_code == 429 and int(first.headers["Retry-After"]) <= 3
    time.sleep(int(first.headers["Retry-After"]) + 0.2)
    assert login(url, "gina", "still-wrong-password").status_code == 401
    again = login(url, "gina", "gina-password-1")
    assert again.status_code == 429 and 4 <= int(again.headers["Retry-After"]) <= 6


def test_one_address_trying_many_names_is_locked_and_a_forged_forwarded_header_does_not_help(host):
    url = host(STORAGE_PREFIX=fresh_storage(), LOGIN_MAX_FAILURES_PER_ADDRESS="5", LOGIN_LOCKOUT_SECONDS="30")
    for i in range(5):
        r = login(url, f"user{i}", "wrong-password-1", headers={"X-Forwarded-For": f"198.51.100.{i}"})
        assert r.status_code == 401
    r = login(url, "admin", ADMIN_PASSWORD, headers={"X-Forwarded-For": "198.51.100.99"})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 20


def test_parallel_guesses_get_no_more_password_checks_than_the_limit(host):
    from concurrent.futures import ThreadPoolExecutor

    url = host(STORAGE_PREFIX=fresh_storage(), LOCAL_USERS="ivan:ivan-password-1", LOGIN_MAX_FAILURES="5")
    with ThreadPoolExecutor(40) as pool:
        codes = list(pool.map(lambda i: login(url, "ivan", f"guess-number-{i}").status_code, range(40)))
    assert codes.count(401) <= 5 and codes.count(401) + codes.count(429) == 40, codes
    assert login(url, "ivan", "ivan-password-1").status_code == 429


def test_parallel_guesses_at_many_names_get_no_more_checks_than_the_address_limit(host):
    from concurrent.futures import ThreadPoolExecutor

    url = host(STORAGE_PREFIX=fresh_storage(), LOGIN_MAX_FAILURES_PER_ADDRESS="5")
    with ThreadPoolExecutor(40) as pool:
        codes = list(pool.map(lambda i: login(url, f"name{i}", "a-wrong-password").status_code, range(40)))
    assert codes.count(401) <= 5 and codes.count(401) + codes.count(429) == 40, codes
    assert login(url, "admin", ADMIN_PASSWORD).status_code == 429


def test_a_lock_out_is_seen_by_every_instance(host):
    prefix = fresh_storage()
    a = host(STORAGE_PREFIX=prefix, LOCAL_USERS="hank:hank-password-1", LOGIN_MAX_FAILURES="3")
    b = host(STORAGE_PREFIX=prefix, LOCAL_USERS="hank:hank-password-1", LOGIN_MAX_FAILURES="3")
    for i in range(3):
        assert login(a, "hank", f"wrong-{i}-password").status_code == 401
    assert login(b, "hank", "hank-password-1").status_code == 429


# --- key rotation -------------------------------------------------------------------------

def test_rotating_the_signing_keys_keeps_tokens_and_snapshots_during_the_grace_period(base_url, alice, host):
    sid = new_session(base_url, alice)
    execute(base_url, alice, sid, "kept = 41 + 1")
    snap = snapshot(base_url, alice, sid)
    old = {"TOKEN_SIGNING_KEY": TEST_ENV["TOKEN_SIGNING_KEY"], "SNAPSHOT_SIGNING_KEY": TEST_ENV["SNAPSHOT_SIGNING_KEY"]}
    new = {"TOKEN_SIGNING_KEY": "rotated-token-key-" + "n" * 32, "SNAPSHOT_SIGNING_KEY": "rotated-snap-key-" + "m" * 32}
    rotating = host(**new, TOKEN_SIGNING_KEY_PREVIOUS=old["TOKEN_SIGNING_KEY"],
                    SNAPSHOT_SIGNING_KEY_PREVIOUS=old["SNAPSHOT_SIGNING_KEY"])
    assert requests.get(f"{rotating}/sessions", headers=alice).status_code == 200
    sid2 = new_session(rotating, alice)
    r = requests.post(f"{rotating}/sessions/{sid2}/loadsnapshot/{snap}", headers=alice)
    assert r.status_code == 200, r.text
    assert execute(rotating, alice, sid2, "", outputParameters=["kept"])["outputParameters"] == [
        {"name": "kept", "value": 42}]
    fresh = login(rotating, "alice").json()  # signed with the new key
    rotated = host(**new)  # the grace period is over: the old key is gone
    assert requests.get(f"{rotated}/sessions", headers=alice).status_code == 401
    assert requests.get(f"{rotated}/sessions", headers=bearer(fresh)).status_code == 200
    sid3 = new_session(rotated, bearer(fresh))
    r = requests.post(f"{rotated}/sessions/{sid3}/loadsnapshot/{snap}", headers=bearer(fresh))
    assert r.status_code == 422 and r.json()["error"] == "snapshot_integrity_failed"


def test_service_names_shared_lets_any_contributor_publish_under_any_name(base_url, alice, bob, host):
    url = host(SERVICE_NAMES="shared")
    name = "Open" + uuid.uuid4().hex[:6]
    body = {"code": "y = 1", "runtimeType": "Python"}
    assert requests.post(f"{url}/services/{name}/1.0", json=body, headers=alice).status_code == 201
    assert requests.post(f"{url}/services/{name}/2.0", json=body, headers=bob).status_code == 201


def test_retrying_a_locked_name_does_not_use_up_its_address(host):
    url = host(STORAGE_PREFIX=fresh_storage(), LOCAL_USERS="pat:pat-password-12;quinn:quinn-password-1",
               LOGIN_MAX_FAILURES="2", LOGIN_MAX_FAILURES_PER_ADDRESS="5", LOGIN_LOCKOUT_SECONDS="30")
    for i in range(2):
        assert login(url, "pat", f"wrong-{i}-password").status_code == 401
    for _ in range(10):  # pat is locked: these are refused before anything is counted
        assert login(url, "pat", "pat-password-12").status_code == 429
    assert login(url, "quinn", "quinn-password-1").status_code == 200


def test_a_successful_login_at_the_address_limit_leaves_the_address_open(host):
    url = host(STORAGE_PREFIX=fresh_storage(), LOCAL_USERS="ruth:ruth-password-12;sam:sam-password-123",
               LOGIN_MAX_FAILURES_PER_ADDRESS="3", LOGIN_LOCKOUT_SECONDS="30")
    assert login(url, "ruth", "wrong-password-1").status_code == 401
    assert login(url, "sam", "wrong-password-2").status_code == 401
    assert login(url, "ruth", "ruth-password-12").status_code == 200  # the third attempt: it succeeds
    for _ in range(3):
        assert login(url, "sam", "sam-password-123").status_code == 200


def test_busy_correct_logins_from_one_address_leave_no_failure_counted(host):
    """A NAT full of people typing their passwords right: 20 accounts log in 15 times each, 20 at
    a time. None of it may count towards LOGIN_MAX_FAILURES_PER_ADDRESS."""
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    from azure.data.tables import TableClient

    prefix = fresh_storage()
    users = {f"nat{i}": f"nat{i}-password-ok" for i in range(20)}
    url = host(STORAGE_PREFIX=prefix, LOCAL_USERS=";".join(f"{u}:{p}" for u, p in users.items()))
    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(lambda i: login(url, f"nat{i % 20}", users[f"nat{i % 20}"]).status_code, range(300)))
    rows = TableClient.from_connection_string(os.environ["STORAGE_CONNECTION_STRING"], f"{prefix}loginfailures")
    address = hashlib.sha256(b"127.0.0.1").hexdigest()[:40]
    left = [{k: v for k, v in row.items() if k in ("failures", "lockouts", "lockedUntil")}
            for row in rows.list_entities() if row["RowKey"] == address]
    assert all(not row.get("failures") and not row.get("lockouts") for row in left), left
    assert codes == [200] * 300, [c for c in codes if c != 200]  # none refused as a crowd either
