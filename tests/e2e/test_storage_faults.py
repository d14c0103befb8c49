"""Storage that stalls, stops or cuts connections: every call answers 503 with Retry-After
within its deadline, names nothing of the account, and the next calls after storage returns
succeed without a restart; nothing visible points at data that was not written."""
from __future__ import annotations

import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.constants import USERS
from tests.e2e.conftest import STORAGE_DEADLINE, start_host, stop_host
from tests.e2e.helpers import execute, new_session, snapshot

pytestmark = [pytest.mark.azurite, pytest.mark.e2e]

DEADLINE = STORAGE_DEADLINE
SLACK = 1.5  # the host's own work around the storage call, on a busy machine
# Threads for the concurrent requests below: with the Python worker's default, min(32, CPUs + 4),
# a 2-core machine has 6, and requests beyond them wait for a thread, not for storage.
_THREADS = "16"
SECRETS = ("devstoreaccount1", "AccountKey", "Eby8vdM02", "127.0.0.1", "http://")
CODE = "y = x * 2"
IO = {"inputParameterDefinitions": [{"name": "x", "type": "numeric"}],
      "outputParameterDefinitions": [{"name": "y", "type": "numeric"}]}


@pytest.fixture
def host(flaky_host):
    return flaky_host


@pytest.fixture
def storage(flaky_storage):
    return flaky_storage


@pytest.fixture
def alice(flaky_alice):
    return flaky_alice


def _publish(host: str, headers: dict, name: str, **extra) -> requests.Response:
    return requests.post(f"{host}/services/{name}/1.0", json={"code": CODE, "runtimeType": "Python", **IO, **extra},
                         headers=headers, timeout=60)


def _consume(host: str, headers: dict, name: str) -> requests.Response:
    return requests.post(f"{host}/api/{name}/1.0", json={"x": 21}, headers=headers, timeout=60)


def _unavailable(r: requests.Response, took: float) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    assert int(r.headers["Retry-After"]) >= 1
    assert took < DEADLINE + SLACK, took
    assert not any(s in r.text for s in SECRETS), r.text


def _calls(host: str, headers: dict, sid: str, name: str) -> dict[str, requests.Response]:
    """One of each kind of call that needs storage, each timed."""
    calls = {
        "list": lambda: requests.get(f"{host}/services", headers=headers, timeout=60),
        "login": lambda: requests.post(f"{host}/login", json={"username": "bob", "password": USERS["bob"]},
                                       timeout=60),
        "session": lambda: requests.post(f"{host}/sessions", json={"runtimeType": "Python"}, headers=headers,
                                         timeout=60),
        "execute": lambda: requests.post(f"{host}/sessions/{sid}/execute", json={"code": "n = 1"},
                                         headers=headers, timeout=60),
        "snapshot": lambda: requests.post(f"{host}/sessions/{sid}/snapshot", json={}, headers=headers, timeout=60),
        "publish": lambda: _publish(host, headers, name),
        "snapshots": lambda: requests.get(f"{host}/snapshots", headers=headers, timeout=60),
    }
    out = {}
    for what, call in calls.items():
        start = time.monotonic()
        r = call()
        out[what] = r
        _unavailable(r, time.monotonic() - start)
    return out


def _all_or_nothing(host: str, headers: dict, name: str) -> None:
    """A publish interrupted by the fault is either whole (it answers) or absent."""
    r = requests.get(f"{host}/services/{name}/1.0", headers=headers, timeout=60)
    if r.status_code == 200:
        c = _consume(host, headers, name)
        assert c.status_code == 200 and c.json()["outputParameters"]["y"] == 42, c.text
    else:
        assert r.status_code == 404, r.text


def test_stalled_storage_answers_503_in_time_and_the_next_calls_succeed(host, storage, alice):
    sid = new_session(host, alice)
    execute(host, alice, sid, "n = 0")
    snaps = {s["id"] for s in requests.get(f"{host}/snapshots", headers=alice, timeout=60).json()}
    before = "before" + uuid.uuid4().hex[:6]
    assert _publish(host, alice, before).status_code == 201
    storage.signal(signal.SIGSTOP)
    try:
        during = "during" + uuid.uuid4().hex[:6]
        _calls(host, alice, sid, during)  # executes n = 1, snapshots, publishes `during`
        start = time.monotonic()
        status = requests.get(f"{host}/status", headers=alice, timeout=60)
        _unavailable(status, time.monotonic() - start)
        assert status.json()["components"]["database"]["statusCode"] == "fail"
        assert status.json()["statusCode"] == "fail"
    finally:
        storage.signal(signal.SIGCONT)
    # The very next calls succeed: no restart, no waiting out a breaker.
    assert requests.get(f"{host}/status", headers=alice, timeout=60).json()["statusCode"] == "pass"
    assert _consume(host, alice, before).json()["outputParameters"]["y"] == 42
    time.sleep(1)  # what storage took in while stopped is carried out now
    # Each interrupted write is whole or absent: the execute's state, the snapshot, the publish.
    assert execute(host, alice, sid, "print(n)")["consoleOutput"].strip() in ("0", "1")
    for snap in {s["id"] for s in requests.get(f"{host}/snapshots", headers=alice, timeout=60).json()} - snaps:
        assert requests.get(f"{host}/snapshots/{snap}", headers=alice, timeout=60).status_code == 200
    _all_or_nothing(host, alice, during)


def test_stopped_storage_answers_503_at_once_and_the_same_folder_serves_again(host, storage, alice):
    sid = new_session(host, alice)
    execute(host, alice, sid, "kept = 'yes'")
    before = "before" + uuid.uuid4().hex[:6]
    assert _publish(host, alice, before).status_code == 201
    storage.stop()
    try:
        _calls(host, alice, sid, "during" + uuid.uuid4().hex[:6])
        status = requests.get(f"{host}/status", headers=alice, timeout=60)
        assert status.status_code == 503 and status.json()["statusCode"] == "fail"
    finally:
        storage.start()
    listed = requests.get(f"{host}/services", headers=alice, timeout=60)
    assert listed.status_code == 200 and before in {s["name"] for s in listed.json()}
    assert _consume(host, alice, before).json()["outputParameters"]["y"] == 42
    assert execute(host, alice, sid, "print(kept)")["consoleOutput"].strip() == "yes"


@pytest.mark.parametrize("cut", ["answers", "requests"])
def test_writes_whose_connection_is_cut_are_retried_to_exactly_one_result(host, storage, alice, cut):
    """A cut answer means storage did the write and the SDK's retry meets it ("already exists",
    "changed since", "not found"): each must count as done, not as someone else's write."""
    arm = storage.cut_answers if cut == "answers" else storage.cut_requests

    def once(call):
        arm(1)
        try:
            return call()
        finally:
            assert storage.calm() >= 1, "nothing was cut: the test did not test"

    sid = once(lambda: new_session(host, alice))
    assert once(lambda: execute(host, alice, sid, "v = 41\nv += 1"))["success"]
    assert execute(host, alice, sid, "print(v)")["consoleOutput"].strip() == "42"
    snaps_before = len(requests.get(f"{host}/snapshots", headers=alice, timeout=60).json())
    snap = once(lambda: snapshot(host, alice, sid))
    snaps = requests.get(f"{host}/snapshots", headers=alice, timeout=60).json()
    assert len(snaps) == snaps_before + 1 and snap in {s["id"] for s in snaps}
    assert requests.get(f"{host}/snapshots/{snap}", headers=alice, timeout=60).status_code == 200

    name = "cut" + uuid.uuid4().hex[:6]
    r = once(lambda: _publish(host, alice, name, snapshotId=snap))
    assert r.status_code == 201, r.text
    assert _consume(host, alice, name).json()["outputParameters"]["y"] == 42
    r = once(lambda: requests.patch(f"{host}/services/{name}/1.0", json={"description": "changed"},
                                    headers=alice, timeout=60))
    assert r.status_code == 200, r.text
    assert requests.get(f"{host}/services/{name}/1.0", headers=alice, timeout=60).json()[0]["description"] == "changed"
    r = once(lambda: requests.delete(f"{host}/services/{name}/1.0", headers=alice, timeout=60))
    assert r.status_code == 200, r.text
    assert requests.get(f"{host}/services/{name}/1.0", headers=alice, timeout=60).status_code == 404
    r = once(lambda: requests.delete(f"{host}/snapshots/{snap}", headers=alice, timeout=60))
    assert r.status_code == 200, r.text
    r = once(lambda: requests.post(f"{host}/login", json={"username": "bob", "password": USERS["bob"]}, timeout=60))
    assert r.status_code == 200, r.text


def test_a_publish_whose_writes_keep_being_cut_is_503_and_whole_or_absent(host, storage, alice):
    for cut in (storage.cut_answers, storage.cut_requests):
        name = "cut" + uuid.uuid4().hex[:6]
        cut(100)
        try:
            r = _publish(host, alice, name)
        finally:
            storage.calm()
        assert r.status_code == 503, r.text
        assert not any(s in r.text for s in SECRETS)
        _all_or_nothing(host, alice, name)


def test_requests_during_a_stall_do_not_queue_behind_each_other(storage):
    """A fresh instance creates its tables on first use: that must not be done under one lock
    that every request waits for, one deadline after another."""
    proc, url = start_host(STORAGE_CONNECTION_STRING=storage.connection_string, PYTHON_THREADPOOL_THREAD_COUNT=_THREADS,
                           STORAGE_TIMEOUT_SECONDS=str(DEADLINE), STORAGE_PREFIX="q" + uuid.uuid4().hex[:8])
    try:
        r = requests.post(f"{url}/login", json={"username": "alice", "password": USERS["alice"]}, timeout=30)
        alice = {"Authorization": f"Bearer {r.json()['access_token']}"}  # trusted for TOKEN_STATE_TTL_SECONDS

        def timed(_: int) -> tuple[int, float]:
            start = time.monotonic()
            r = requests.get(f"{url}/snapshots", headers=alice, timeout=60)  # a table this host has not made
            return r.status_code, time.monotonic() - start

        storage.signal(signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(6) as pool:
                answers = list(pool.map(timed, range(6)))
        finally:
            storage.signal(signal.SIGCONT)
        assert all(code == 503 for code, _ in answers), answers
        assert max(took for _, took in answers) < DEADLINE + SLACK + 1, answers
    finally:
        stop_host(proc)


def test_a_host_started_while_storage_stalls_answers_every_request_within_one_deadline(host, storage, alice):
    """A fresh instance has compared no account with the settings yet, and knows no table: none
    of that may make requests wait for storage one after another."""
    refresh = requests.post(f"{host}/login", json={"username": "bob", "password": USERS["bob"]},
                            timeout=60).json()["refresh_token"]
    storage.signal(signal.SIGSTOP)
    proc = None
    try:
        proc, fresh = start_host(STORAGE_CONNECTION_STRING=storage.connection_string, PYTHON_THREADPOOL_THREAD_COUNT=_THREADS,
                                 STORAGE_TIMEOUT_SECONDS=str(DEADLINE))
        calls = [
            ("anonymous", 401, lambda: requests.get(f"{fresh}/sessions", timeout=60)),
            ("anonymous", 401, lambda: requests.get(f"{fresh}/services", timeout=60)),
            ("login", 503, lambda: requests.post(f"{fresh}/login", timeout=60,
                                                 json={"username": "bob", "password": USERS["bob"]})),
            ("login", 503, lambda: requests.post(f"{fresh}/login", timeout=60,
                                                 json={"username": "alice", "password": USERS["alice"]})),
            ("token", 503, lambda: requests.get(f"{fresh}/sessions", headers=alice, timeout=60)),
            ("token", 503, lambda: requests.get(f"{fresh}/services", headers=alice, timeout=60)),
            ("token", 503, lambda: requests.get(f"{fresh}/snapshots", headers=alice, timeout=60)),
            ("status", 503, lambda: requests.get(f"{fresh}/status", headers=alice, timeout=60)),
            ("renew", 503, lambda: requests.post(f"{fresh}/login/refreshToken", json={"refreshToken": refresh},
                                                 timeout=60)),
            ("revoke", 503, lambda: requests.delete(f"{fresh}/login/refreshToken", params={"refreshToken": refresh},
                                                    timeout=60)),
        ]

        def timed(call):
            start = time.monotonic()
            r = call()
            return r, time.monotonic() - start

        with ThreadPoolExecutor(len(calls)) as pool:
            answers = list(pool.map(timed, [call for _, _, call in calls]))
        seen = [(what, r.status_code, round(took, 1)) for (what, _, _), (r, took) in zip(calls, answers)]
        for (what, expected, _), (r, took) in zip(calls, answers):
            assert r.status_code == expected, seen
            if expected == 401:
                assert took < SLACK, seen  # no storage needed to refuse a request without a token
            else:
                _unavailable(r, took)
    finally:
        storage.signal(signal.SIGCONT)
        if proc is not None:
            stop_host(proc)


def test_a_host_started_while_storage_stalls_still_refuses_tokens_of_settings_rolled_back(storage):
    """What the comparison of accounts protects holds when it could not run at the start: once
    storage answers, no token of an earlier setting is taken before it has run."""
    prefix, old, new = "t" + uuid.uuid4().hex[:10], "carol:carol-password-1", "carol:carol-password-2"
    common = {"STORAGE_CONNECTION_STRING": storage.connection_string, "STORAGE_TIMEOUT_SECONDS": str(DEADLINE),
              "STORAGE_PREFIX": prefix, "LOCAL_ROLES": "", "SPARE_WORKERS": "0"}
    procs = []
    try:
        procs.append(start_host(**common, LOCAL_USERS=old))
        r = requests.post(f"{procs[-1][1]}/login", json={"username": "carol", "password": "carol-password-1"},
                          timeout=60)
        token = {"Authorization": f"Bearer {r.json()['access_token']}"}
        procs.append(start_host(**common, LOCAL_USERS=new))  # the password changed...
        assert requests.get(f"{procs[-1][1]}/sessions", headers=token, timeout=60).status_code == 401
        storage.signal(signal.SIGSTOP)
        try:
            procs.append(start_host(**common, LOCAL_USERS=old))  # ...and is rolled back while storage stalls
            rolled_back = procs[-1][1]
            r = requests.get(f"{rolled_back}/sessions", headers=token, timeout=60)
            assert r.status_code == 503, r.text
        finally:
            storage.signal(signal.SIGCONT)
        deadline = time.monotonic() + 30
        while True:  # storage that was stopped may take a moment to answer within the deadline again
            r = requests.get(f"{rolled_back}/sessions", headers=token, timeout=60)
            assert r.status_code in (401, 503), r.text  # never taken
            if r.status_code == 401 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert r.status_code == 401, r.text
    finally:
        for proc, _ in procs:
            stop_host(proc)
