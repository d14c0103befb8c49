"""What an attacker tried against the fault handling: learn more than "storage is down" while it
is, pass a token whose state cannot be checked, and use another caller's Idempotency-Key to
reach their snapshot or service."""
from __future__ import annotations

import signal
import time
import uuid

import pytest
import requests

from tests.constants import USERS
from tests.e2e.conftest import flaky_alice, flaky_host, flaky_storage  # noqa: F401 - the same fixtures
from tests.e2e.helpers import execute, new_session

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]


def _login(host: str, user: str) -> dict[str, str]:
    r = requests.post(f"{host}/login", json={"username": user, "password": USERS[user]}, timeout=30)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_while_storage_is_down_a_caller_who_cannot_be_checked_learns_only_that(flaky_host, flaky_storage):
    host = flaky_host
    bob = _login(host, "bob")
    revoked = requests.post(f"{host}/login", json={"username": "bob", "password": USERS["bob"]}, timeout=30).json()
    assert requests.delete(f"{host}/login/refreshToken", params={"refreshToken": revoked["refresh_token"]},
                           headers=bob, timeout=30).status_code == 200
    time.sleep(5.5)  # past TOKEN_STATE_TTL_SECONDS: no instance may trust what it knew of either token
    flaky_storage.signal(signal.SIGSTOP)
    try:
        assert requests.get(f"{host}/status", timeout=30).status_code == 401  # no token: nothing at all
        assert requests.get(f"{host}/status", headers={"Authorization": "Bearer x.y.z"}, timeout=30).status_code == 401
        for headers in (bob, {"Authorization": f"Bearer {revoked['access_token']}"}):
            r = requests.get(f"{host}/status", headers=headers, timeout=30)
            assert r.status_code == 503, r.text
            assert set(r.json()) == {"statusCode", "components"}
            assert set(r.json()["components"]) == {"database"}  # no sandbox, workers or versions
        # every other call refuses: a token whose state cannot be read is not taken on trust
        r = requests.get(f"{host}/snapshots", headers={"Authorization": f"Bearer {revoked['access_token']}"},
                         timeout=30)
        assert r.status_code == 503
    finally:
        flaky_storage.signal(signal.SIGCONT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = requests.get(f"{host}/snapshots", headers={"Authorization": f"Bearer {revoked['access_token']}"},
                         timeout=30)
        if r.status_code != 503:
            break
        time.sleep(0.5)
    assert r.status_code == 401  # once storage answers, the revoked token is refused again


def test_another_callers_idempotency_key_reaches_nothing_of_theirs(flaky_host, flaky_alice):
    host, alice = flaky_host, flaky_alice
    bob = _login(host, "bob")
    key = {"Idempotency-Key": str(uuid.uuid4())}
    sid = new_session(host, alice)
    execute(host, alice, sid, "secret = 'alice only'")
    mine = requests.post(f"{host}/sessions/{sid}/snapshot", json={}, headers={**alice, **key}, timeout=60)
    assert mine.status_code == 201
    # bob replays alice's key on his own session: his own snapshot, not hers
    bobs = requests.post(f"{host}/sessions/{new_session(host, bob)}/snapshot", json={}, headers={**bob, **key})
    assert bobs.status_code == 201 and bobs.json() != mine.json()
    assert requests.get(f"{host}/snapshots/{mine.json()['snapshotId']}", headers=bob).status_code == 404
    # ...and on alice's session: 422 (his own key, already used for another request: it says
    # nothing of hers), and with a new key, not found
    assert requests.post(f"{host}/sessions/{sid}/snapshot", json={}, headers={**bob, **key}).status_code == 422
    fresh = {"Idempotency-Key": str(uuid.uuid4())}
    assert requests.post(f"{host}/sessions/{sid}/snapshot", json={}, headers={**bob, **fresh}).status_code == 404
    # a development version published with alice's key is not bob's to be answered with
    name = "k" + uuid.uuid4().hex[:8]
    body = {"code": "y = 1", "runtimeType": "Python"}
    first = requests.post(f"{host}/services/{name}", json=body, headers={**alice, **key})
    assert first.status_code == 201
    again = requests.post(f"{host}/services/{name}", json=body, headers={**bob, **key})
    assert again.status_code in (201, 403) and again.json() != first.json()
    assert requests.get(f"{host}/services/{name}/{first.json()}", headers=bob).status_code == 404


def test_wrong_guesses_during_a_storage_stall_get_no_more_checks_than_the_limit(flaky_host, flaky_storage):
    """The attacker's round: parallel wrong passwords, storage paused while their failures are
    written. Answers that storage could not count keep their places (and count as failures when
    they lapse: tests/integration/test_throttle.py), so the guesses that get an answer stay
    within LOGIN_MAX_FAILURES (10) for the name."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from tests.e2e.conftest import STORAGE_DEADLINE

    def guess(i: int) -> int:
        return requests.post(f"{flaky_host}/login", json={"username": "rita", "password": f"guess-{i}"},
                             timeout=60).status_code

    def stall() -> None:
        time.sleep(0.3)
        flaky_storage.signal(signal.SIGSTOP)
        time.sleep(STORAGE_DEADLINE + 0.4)
        flaky_storage.signal(signal.SIGCONT)

    stalling = threading.Thread(target=stall)
    stalling.start()
    with ThreadPoolExecutor(10) as pool:
        first = list(pool.map(guess, range(10)))
    stalling.join()
    time.sleep(1)
    then = [guess(i) for i in range(10, 20)]
    answered = (first + then).count(401)
    assert answered <= 10, (first, then)
    assert all(code in (401, 429, 503) for code in first + then), (first, then)
